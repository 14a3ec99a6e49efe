"""Linearise a network around its weights ``w0``: outputs ``f0(x)`` and Jacobians ``J(x)``.

``f(x; w) ~ f0(x) + J(x) (w - w0)``. Jacobians come from ``torch.func``
(``functional_call``, ``vmap``, ``jacrev``) in batches on any device; the model
is evaluated in ``eval()`` mode, so batch-norm uses its running statistics.

For large models two reductions keep ``J`` small:

- ``params``: differentiate only the named parameters (the rest stay at w0);
- ``projection_dim=d``: train in a random ``d``-dimensional subspace,
  ``w = w0 + R v``, so ``J R`` replaces ``J`` and ``E[J R R^T J^T] = J J^T``.
  ``projection="gaussian"``: ``R`` of i.i.d. ``N(0, 1/d)`` entries, generated
  in seeded row blocks and never stored whole (O(P d) random numbers per input
  batch). ``projection="sparse"`` (CountSketch): row ``p`` of ``R`` has a single
  entry ``s_p`` = +-1 in column ``h_p``, both seeded, so ``E[R R^T] = I`` and
  ``(J R)[:, c] = sum_{p: h_p = c} s_p J[:, p]`` costs O(P) per Jacobian row,
  whatever ``d`` (for dense ``J`` its kernel error is that of the Gaussian's).
"""
from __future__ import annotations

import copy
from collections.abc import Iterable
from dataclasses import dataclass
from enum import Enum

import torch
from torch.func import functional_call, jacrev, vmap
from tqdm.auto import tqdm

from lsi.validation import check_choice

_PROJECTION_BLOCK = 1 << 14


class Projection(str, Enum):
    """The random matrix ``R`` of ``projection_dim``."""

    GAUSSIAN = "gaussian"
    """i.i.d. ``N(0, 1/d)`` entries."""
    SPARSE = "sparse"
    """CountSketch: one seeded +-1 per row, in a seeded column."""


@dataclass
class Linearization:
    """Outputs ``f0`` (n, k) and Jacobian ``jac`` (n*k, P) of a network at ``w0``."""

    f0: torch.Tensor
    jac: torch.Tensor

    @property
    def n_outputs(self) -> int:
        return self.f0.shape[1]

    def take(self, samples) -> "Linearization":
        """The linearisation of a subset of the samples (their ``k`` Jacobian rows each)."""
        samples = torch.as_tensor(samples, dtype=torch.long, device=self.f0.device)
        rows = (samples[:, None] * self.n_outputs + torch.arange(self.n_outputs, device=samples.device))
        return Linearization(f0=self.f0[samples], jac=self.jac[rows.reshape(-1)])

    def __len__(self) -> int:
        return len(self.f0)


def select_parameters(model: torch.nn.Module, params: Iterable[str] | None) -> list[str]:
    """Names of the parameters to linearise in; all trainable ones by default."""
    names = [name for name, p in model.named_parameters() if p.requires_grad]
    if params is None:
        return names
    chosen = list(params)
    unknown = sorted(set(chosen) - set(names))
    if unknown:
        raise ValueError(
            f"params {unknown} are not trainable parameters of the model; valid names "
            f"include {names[:6]}{' ...' if len(names) > 6 else ''}."
        )
    return chosen


def _project(jac: torch.Tensor, dim: int, seed: int) -> torch.Tensor:
    """``jac @ R`` for the seeded Gaussian ``R`` (P, dim) with variance ``1/dim``."""
    out = jac.new_zeros(jac.shape[0], dim)
    for block, start in enumerate(range(0, jac.shape[1], _PROJECTION_BLOCK)):
        stop = min(start + _PROJECTION_BLOCK, jac.shape[1])
        gen = torch.Generator().manual_seed(seed * 1_000_003 + block)  # drawn on the CPU: same R on every device
        r = torch.randn(stop - start, dim, generator=gen, dtype=jac.dtype).to(jac.device)
        out += jac[:, start:stop] @ r
    return out / dim**0.5


def _sketch(jac: torch.Tensor, dim: int, seed: int) -> torch.Tensor:
    """``jac @ R`` for the seeded CountSketch ``R`` (P, dim): ``out[:, h_p] += s_p jac[:, p]``."""
    gen = torch.Generator().manual_seed(seed)  # drawn on the CPU: same R on every device
    column = torch.randint(dim, (jac.shape[1],), generator=gen).to(jac.device)
    sign = (torch.randint(2, (jac.shape[1],), generator=gen) * 2 - 1).to(jac.device, jac.dtype)
    return jac.new_zeros(jac.shape[0], dim).index_add_(1, column, jac * sign)


def project(jac: torch.Tensor, dim: int, seed: int, projection: str | Projection = Projection.GAUSSIAN
            ) -> torch.Tensor:
    """``jac @ R`` (rows, dim) for the seeded random ``R`` of kind ``projection``."""
    if Projection(projection) is Projection.SPARSE:
        return _sketch(jac, dim, seed)
    return _project(jac, dim, seed)


def linearize(model: torch.nn.Module, inputs: torch.Tensor, *, params: Iterable[str] | None = None,
              projection_dim: int | None = None, projection: str = "gaussian", seed: int = 0,
              batch_size: int = 256,
              device: str | torch.device = "cpu", dtype: torch.dtype = torch.float64,
              progress: bool = False) -> Linearization:
    """``f0`` and the stacked Jacobian (sample-major rows ``i*k + c``) of ``model`` on ``inputs``.

    The model is copied to ``device``/``dtype``; the caller's model is untouched.
    ``projection_dim``/``projection`` reduce the Jacobian to ``J R`` batch by batch
    (see the module docstring).
    """
    projection = check_choice(projection, Projection, name="projection")
    net = copy.deepcopy(model).to(device=device, dtype=dtype).eval()
    names = select_parameters(net, params)
    state = {**dict(net.named_parameters()), **dict(net.named_buffers())}
    state = {name: value.detach() for name, value in state.items()}
    trainable = {name: state.pop(name) for name in names}

    def output(weights: dict, x: torch.Tensor) -> torch.Tensor:
        return functional_call(net, {**state, **weights}, (x.unsqueeze(0),)).reshape(-1)

    jac_fn = vmap(jacrev(output), in_dims=(None, 0))
    out_fn = vmap(output, in_dims=(None, 0))
    f0, jac = [], []
    starts = range(0, len(inputs), batch_size)
    for start in tqdm(starts, desc="Jacobian", disable=not progress, leave=False):
        x = torch.as_tensor(inputs[start:start + batch_size]).to(device)
        x = x.to(dtype) if x.is_floating_point() else x
        with torch.no_grad():
            f0.append(out_fn(trainable, x))
        parts = jac_fn(trainable, x)
        block = torch.cat([parts[name].reshape(len(x), f0[-1].shape[1], -1) for name in names], -1)
        block = block.reshape(-1, block.shape[-1]).detach()
        jac.append(block if projection_dim is None else project(block, projection_dim, seed, projection))
    return Linearization(f0=torch.cat(f0), jac=torch.cat(jac))
