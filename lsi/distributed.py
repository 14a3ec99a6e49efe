"""Spread a run's chunks over a Ray cluster: :class:`RayExecutor`.

:func:`lsi.runner.run` splits the requested samples into chunks (boundaries
from the positions and the memory budget only) and hands the chunks that its
:class:`~lsi.results.ChunkStore` lacks to an *executor*. This one sends each
chunk to a Ray task. The process that calls :func:`lsi.compute_lsi` (the
*driver*) builds the scoring engine once (full-data fit, its Hessian factor and
precision); the engine is serialised once into Ray's object store; every task
loads it onto its own device, sets its thread count, scores its chunk with
exactly the code a one-process run uses and returns the table. The driver
writes each table into the chunk store as it arrives (atomically), so:

- the merged table is the one-process run's, bit for bit, when the driver and
  every task use the same number of CPU threads as that run (BLAS reductions
  depend on it) or the same GPU model;
- a worker that dies mid-task (killed, out of memory, node lost) has its chunk
  rerun by Ray on another worker (``max_retries`` times); a chunk is stored
  only once, under its one name, so nothing is lost or duplicated;
- a second run of the same command reuses every stored chunk, wherever it was
  computed, and schedules only the rest.

The cluster is checked when the executor is made (:func:`check_cluster`), before
any feature extraction or full-data fit: an address that does not answer is a
``ConnectionError``, and a process already joined to another cluster a
``ValueError``, each with a one-line message.
"""
from __future__ import annotations

import io
import re
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pandas as pd
import torch

PROBE_TIMEOUT_S = 5.0
"""Seconds one TCP connection to a cluster's address may take before it counts as unreachable."""
TASK_NAME = "lsi_chunk"
"""Ray task name of one chunk (workers show it as ``ray::lsi_chunk`` while they score)."""


def serialise(score: Callable) -> bytes:
    """``score`` and the tensors it closes over, as ``torch.save`` bytes (cloudpickle for closures)."""
    from ray import cloudpickle

    buffer = io.BytesIO()
    torch.save(score, buffer, pickle_module=cloudpickle)
    return buffer.getvalue()


def score_chunk(payload: bytes, chunk: np.ndarray, threads: int, device: str) -> pd.DataFrame:
    """One Ray task: load the engine onto ``device`` with ``threads`` CPU threads and score ``chunk``."""
    torch.set_num_threads(threads)
    score = torch.load(io.BytesIO(payload), map_location=device, weights_only=False)
    return score(np.array(chunk), None)  # a writable copy: Ray hands over read-only arrays


def _host_port(address: str) -> tuple[str, int] | None:
    """``(host, port)`` of ``host:port`` or ``ray://host:port``; ``None`` for ``auto`` (Ray finds it)."""
    if address == "auto":
        return None
    match = re.fullmatch(r"(?:ray://)?\[?([^\]/]+?)\]?:(\d+)/?", address)
    if not match:
        raise ValueError(f"Ray address {address!r} is not host:port, ray://host:port or 'auto'.")
    return match.group(1), int(match.group(2))


def check_cluster(address: str | None, timeout: float = PROBE_TIMEOUT_S) -> None:
    """Fail fast on a cluster that cannot serve this run.

    - this process already joined a Ray cluster at another address than ``address``: ``ValueError``
      (Ray would silently keep the first one);
    - ``address`` (``host:port`` or ``ray://host:port``) does not accept a TCP connection within
      ``timeout`` seconds: ``ConnectionError``. ``"auto"`` and ``None`` are left to ``ray.init``.
    """
    import ray

    if address is None:
        return
    target = _host_port(address)
    if ray.is_initialized():
        joined = ray.get_runtime_context().gcs_address
        if target is not None and not address.startswith("ray://") and joined != f"{target[0]}:{target[1]}":
            raise ValueError(f"This process already joined the Ray cluster at {joined}, not {address}; "
                             f"call ray.shutdown() first, or pass address=None to use the joined cluster.")
        return
    if target is not None:
        from lsi.data.sources import reachable

        if not reachable(*target, timeout=timeout):
            raise ConnectionError(f"No Ray cluster answers at {address} (no TCP connection within {timeout:g} s). "
                                  f"Check the address and that 'ray start --head' runs there.")


class RayExecutor:
    """An :data:`lsi.runner.Executor` that scores chunks as Ray tasks.

    ``address``: a running cluster (``"host:6379"``, ``"auto"`` for the one ``ray start``
    runs on this machine, ``"ray://host:10001"``); ``None`` uses the cluster this
    process already joined, else starts a new local one for the run (never a
    stale one a crashed run left in Ray's bootstrap file). ``threads``: CPU threads (and Ray CPUs) per task.
    ``device``: ``"cpu"`` or ``"cuda"``; with CUDA each task reserves one GPU and
    the engine's tensors are loaded onto it. ``max_retries``: reruns of a
    chunk whose worker died. Making one runs :func:`check_cluster`.
    """

    def __init__(self, address: str | None = None, *, threads: int = 1, device: str | torch.device = "cpu",
                 max_retries: int = 3):
        if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
            raise ValueError(f"threads == {threads!r}, must be an integer >= 1.")
        self.address, self.threads, self.max_retries = address, threads, int(max_retries)
        self.device = "cuda" if torch.device(device).type == "cuda" else "cpu"
        check_cluster(address)

    def __call__(self, score: Callable[[np.ndarray, Any], pd.DataFrame], pending: list[np.ndarray],
                 bar: Any = None) -> Iterator[tuple[np.ndarray, pd.DataFrame]]:
        """Submit every pending chunk, then yield ``(chunk, table)`` in the order they finish."""
        if not pending:
            return
        import ray

        check_cluster(self.address)
        own = not ray.is_initialized()
        if own:
            try:
                ray.init(address=self.address or "local", **({} if self.address else {"include_dashboard": False}))
            except ConnectionError as error:
                raise ConnectionError(f"Ray could not join the cluster at {self.address}: "
                                      f"{str(error).splitlines()[0]}") from error
        task = ray.remote(score_chunk).options(
            name=TASK_NAME, num_cpus=self.threads, num_gpus=1 if self.device == "cuda" else 0,
            max_retries=self.max_retries, retry_exceptions=False)
        payload = ray.put(serialise(score))
        running = {task.remote(payload, chunk, self.threads, self.device): chunk for chunk in pending}
        try:
            while running:
                ready, _ = ray.wait(list(running), num_returns=1)
                chunk = running.pop(ready[0])
                yield chunk, ray.get(ready[0])
        finally:
            for ref in running:
                ray.cancel(ref, force=True)
            if own:
                ray.shutdown()
