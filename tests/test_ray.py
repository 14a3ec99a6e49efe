"""``lsi compute --ray``: a 2-worker Ray cluster on 127.0.0.1, started here; bit-identical tables, a killed worker, reuse."""
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from prerequisites import require_module

CLUSTER_EXTRA = "the cluster extra: pip install -e '.[cluster]'"
psutil = require_module("psutil", CLUSTER_EXTRA, module_level=True)
require_module("ray", CLUSTER_EXTRA, module_level=True)

# A Ray cluster (about a minute on 2 cores): make test, not test-fast. Each test gives up after 10 minutes,
# so a hung cluster or task fails the run instead of holding it until CI's own limit.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

import lsi  # noqa: E402
from core_data import blobs  # noqa: E402
from lsi.cli import main  # noqa: E402
from lsi.distributed import TASK_NAME  # noqa: E402
from lsi.features import _threads  # noqa: E402

RUN = ("--solver", "gd", "--epochs", "3000", "--memory-budget", "2MiB", "--quiet")
"""About 8 chunks of about a second each on one thread: long enough to kill a worker mid-chunk."""


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _wait_for_port(port: int, process: subprocess.Popen, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"ray start exited with {process.returncode}")
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.2)
    raise TimeoutError(f"the Ray head did not listen on 127.0.0.1:{port} within {seconds} s")


@pytest.fixture(scope="module")
def cluster():
    """A Ray head with 2 CPUs (so 2 one-thread workers) on the loopback address; stopped by its own pid.

    Token authentication is off for this private loopback cluster, so no token file of the machine's other
    Ray runs (``~/.ray/auth_token``) can get in the way.
    """
    port = _free_port()
    with pytest.MonkeyPatch.context() as env:
        env.setenv("RAY_AUTH_MODE", "disabled")  # the head (a child) and this process's driver
        yield from _head(port)


def _head(port: int):
    """`ray start --head --block` on 127.0.0.1:port; yields the address, then stops the head (SIGTERM)."""
    head = subprocess.Popen(
        [str(Path(sys.executable).with_name("ray")), "start", "--head", "--block", "--node-ip-address=127.0.0.1",
         f"--port={port}", "--num-cpus=2", "--num-gpus=0", "--include-dashboard=false", "--disable-usage-stats",
         f"--object-store-memory={100 * 2 ** 20}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        _wait_for_port(port, head)
        yield f"127.0.0.1:{port}"
    finally:
        head.send_signal(signal.SIGTERM)  # `ray start --block` stops the processes it started
        try:
            head.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(head.pid, signal.SIGKILL)


@pytest.fixture(scope="module")
def problem(tmp_path_factory):
    """A features file and its one-process table at one thread (the Ray tasks' thread count)."""
    folder = tmp_path_factory.mktemp("ray")
    X, y = blobs(300, 16, 3)
    features = folder / "F.npz"
    np.savez(features, features=X, labels=y)
    reference = folder / "reference.parquet"
    assert main(["compute", "--features", str(features), *RUN, "--threads", "1", "--out", str(reference)]) == 0
    return features, lsi.load_table(reference)


def _kill_first_chunk_worker(killed: list, stop: threading.Event) -> None:
    """SIGKILL the first worker process seen scoring a chunk (its title is ``ray::lsi_chunk``)."""
    while not stop.is_set() and not killed:
        for process in psutil.process_iter(["pid", "cmdline"]):
            if (process.info["cmdline"] or [""])[0].startswith(f"ray::{TASK_NAME}"):
                try:
                    os.kill(process.info["pid"], signal.SIGKILL)
                except ProcessLookupError:  # it finished its chunk first: wait for the next one
                    continue
                killed.append(process.info["pid"])
                return
        time.sleep(0.02)


def test_a_killed_worker_changes_nothing_and_the_table_is_bit_identical(cluster, problem, tmp_path):
    features, reference = problem
    out = tmp_path / "ray.parquet"
    killed, stop = [], threading.Event()
    killer = threading.Thread(target=_kill_first_chunk_worker, args=(killed, stop))
    killer.start()
    try:
        assert main(["compute", "--features", str(features), *RUN, "--ray", cluster, "--out", str(out)]) == 0
    finally:
        stop.set()
        killer.join()
    assert killed, "no worker was seen scoring a chunk"
    assert not psutil.pid_exists(killed[0])
    table = lsi.load_table(out)
    pd.testing.assert_frame_equal(table, reference, check_exact=True)  # nothing lost, nothing twice, same bits
    assert table.attrs["lsi"]["execution"] == {"threads": 1, "ray": cluster}
    assert table.attrs["lsi"]["identity"] == reference.attrs["lsi"]["identity"]
    assert not out.with_name(out.name + ".parts").exists()


def test_a_rerun_reuses_the_finished_chunks(cluster, problem, tmp_path):
    features, reference = problem
    out = tmp_path / "ray.parquet"
    parts = out.with_name(out.name + ".parts")
    with np.load(features) as data:  # an interrupted run of the same command: the first 100 samples are done
        X, y = data["features"], data["labels"]
    with _threads(1):  # the Ray tasks' thread count, this test only
        lsi.compute_lsi(X, y, solver="gd", epochs=3000, memory_budget="2MiB", indices="0:100", checkpoint=parts,
                        progress=False)
    stored = sorted(parts.glob("chunk-*.parquet"))
    marked = lsi.load_table(stored[0])
    marked["lsi"] = -1.0  # a value no computation gives: it shows where a row came from
    lsi.save_table(marked, stored[0])
    assert main(["compute", "--features", str(features), *RUN, "--ray", cluster, "--out", str(out)]) == 0
    table = lsi.load_table(out).set_index("index")
    assert len(stored) >= 2 and (table.loc[marked["index"], "lsi"] == -1.0).all()  # reused, not recomputed
    rest = table.drop(index=marked["index"])
    pd.testing.assert_frame_equal(rest, reference.set_index("index").loc[rest.index], check_exact=True)
