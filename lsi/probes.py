"""Probes: the small models whose leave-one-out posteriors LSI compares.

A probe works on *batches of models* at once. Parameters of B models are a
``(B, K)`` tensor ``theta``; sample weights are a ``(B, n)`` tensor ``w`` (1 for
a sample in the model's training set, 0 for the one left out). Every probe
provides, for the cross-entropy loss ``CE_j`` of sample j:

* ``logits(theta, X)`` -> ``(B, n, C)``
* ``grad(theta, X, Y, w)`` -> ``sum_j w_j grad CE_j``, ``(B, K)``
* ``ggn_diag(theta, X, w)`` -> ``diag sum_j w_j J_j^T (diag p_j - p_j p_j^T) J_j``
* ``kfac(theta, X, w)`` -> per-layer Kronecker factors ``[(A_l, G_l)]`` of that GGN
* ``ggn_full``, ``ggn_vp``, ``hessian``, ``per_sample_grads``: generic through
  :mod:`torch.func`, used by the second-order solvers and the full structure.

The linear and MLP probes use closed forms: each layer's weights (bias as last
input row) are an ``(in + 1, out)`` block, flattened row-major, so a layer's
GGN block is ``A (in+1 x in+1) kron G (out x out)``. The batched products fold
the model axis into one GEMM (``X @ [W_1 ... W_B]``), which is what makes the
leave-one-out engine run at matrix-multiply speed.
"""
from __future__ import annotations

import math
import warnings
import weakref

import torch
from torch import Tensor
from torch.func import functional_call, grad, jacrev, jvp, vjp, vmap

with warnings.catch_warnings():  # forward-mode AD (jvp) loads these on first use, through the deprecated torch.jit.script
    warnings.filterwarnings("ignore", "`torch.jit.script` is deprecated", FutureWarning)
    from torch._decomp import decompositions_for_jvp  # noqa: F401


def _augment(X: Tensor) -> Tensor:
    """Append the constant 1 that carries the bias: ``[x, 1]``."""
    return torch.cat([X, X.new_ones(X.shape[:-1] + (1,))], dim=-1)


def _fold_matmul(X: Tensor, W: Tensor) -> Tensor:
    """``X @ W_b`` for every model b in one GEMM: ``(n, i) x (B, i, o) -> (n, B, o)``, contiguous."""
    B, i, o = W.shape
    return (X @ W.permute(1, 0, 2).reshape(i, B * o)).view(-1, B, o)


def _fold_matmul_t(X: Tensor, R: Tensor) -> Tensor:
    """``X^T @ R_b`` for every model b in one GEMM: ``(n, i) x (n, B, o) -> (B, i, o)``."""
    n, B, o = R.shape
    return (X.T @ R.reshape(n, B * o)).view(-1, B, o).transpose(0, 1)


def softmax_curvature_apply(p: Tensor, v: Tensor) -> Tensor:
    """``(diag p - p p^T) v`` along the last axis: the CE Hessian w.r.t. the logits."""
    return p * v - p * (p * v).sum(-1, keepdim=True)


def softmax_sqrt(p: Tensor) -> Tensor:
    """``S = diag(sqrt p) - p sqrt(p)^T``, a square root: ``S S^T = diag p - p p^T`` (as ``sum p = 1``)."""
    root = p.sqrt()
    return torch.diag_embed(root) - p[..., :, None] * root[..., None, :]


class Probe:
    """Generic probe: everything derived from ``logits`` through :mod:`torch.func`."""

    n_params: int
    n_classes: int

    def logits(self, theta: Tensor, X: Tensor) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def init(self, seed: int, *, dtype: torch.dtype, device: torch.device | str) -> Tensor:
        raise NotImplementedError  # pragma: no cover - abstract

    # --- losses -----------------------------------------------------------------
    def ce(self, theta: Tensor, X: Tensor, Y: Tensor) -> Tensor:
        """Per-sample cross-entropy ``(B, n)``."""
        logits = self.logits(theta, X)
        return torch.logsumexp(logits, -1) - logits.gather(-1, Y.expand(len(theta), -1)[..., None])[..., 0]

    def probabilities(self, theta: Tensor, X: Tensor) -> Tensor:
        return torch.softmax(self.logits(theta, X), -1)

    def grad(self, theta: Tensor, X: Tensor, Y: Tensor, w: Tensor) -> Tensor:
        """``sum_j w_bj grad CE_j(theta_b)`` for every model b."""
        def weighted(t, wb):
            return (self.ce(t[None], X, Y)[0] * wb).sum()
        return vmap(grad(weighted))(theta, w)

    def grad_and_ggn_diag(self, theta: Tensor, X: Tensor, Y: Tensor, w: Tensor):
        """:meth:`grad`, and a function ``rows -> ggn_diag(theta[rows], X, w[rows])`` at the same parameters
        (a boolean mask over the batch, called once); probes with closed forms reuse the pass's softmax outputs."""
        return self.grad(theta, X, Y, w), lambda rows: self.ggn_diag(theta[rows], X, w[rows])

    # --- curvature (generic, single model) ---------------------------------------
    def _jacobian(self, theta: Tensor, X: Tensor) -> Tensor:
        """Per-sample Jacobians of the logits, ``(n, C, K)``."""
        return jacrev(lambda t: self.logits(t[None], X)[0])(theta)

    def ggn_full(self, theta: Tensor, X: Tensor, w: Tensor, *, chunk: int = 256) -> Tensor:
        """``sum_j w_j J_j^T (diag p_j - p_j p_j^T) J_j`` as a dense ``(K, K)`` matrix."""
        total = theta.new_zeros(self.n_params, self.n_params)
        for start in range(0, len(X), chunk):
            xs, ws = X[start:start + chunk], w[start:start + chunk]
            J = self._jacobian(theta, xs)                       # (m, C, K)
            p = self.probabilities(theta[None], xs)[0]          # (m, C)
            pJ = (p[..., None] * J).sum(1)                      # (m, K)
            total += torch.einsum("m,mc,mck,mcl->kl", ws, p, J, J) - (ws[:, None] * pJ).T @ pJ
        return total

    def sample_ggn_diag(self, theta: Tensor, X: Tensor) -> Tensor:
        """Diagonal of each sample's own GGN ``J_j^T Lambda_j J_j`` at one ``theta``, ``(n, K)``."""
        J = self._jacobian(theta, X)
        p = self.probabilities(theta[None], X)[0]
        pJ = (p[..., None] * J).sum(1)
        return (p[..., None] * J * J).sum(1) - pJ * pJ

    def sample_ggn_factor(self, theta: Tensor, X: Tensor) -> Tensor:
        """``U_j = J_j^T S_j`` with ``S_j S_j^T = diag p_j - p_j p_j^T``, so ``GGN_j = U_j U_j^T``; ``(n, K, C)``."""
        J = self._jacobian(theta, X)
        S = softmax_sqrt(self.probabilities(theta[None], X)[0])
        return J.transpose(1, 2) @ S

    def jacobian_products(self, theta: Tensor, X: Tensor, A: Tensor) -> tuple[Tensor, Tensor]:
        """``A J_j^T`` ``(n, K, C)`` and ``J_j A J_j^T`` ``(n, C, C)`` for a symmetric ``(K, K)`` matrix ``A``,
        ``J_j`` the Jacobian of sample j's logits: one GEMM of ``2 K^2 C`` FLOP per sample."""
        Jt = self._jacobian(theta, X).transpose(1, 2)                                       # (n, K, C)
        n, K, C = Jt.shape
        AJ = (A @ Jt.permute(1, 0, 2).reshape(K, n * C)).view(K, n, C).permute(1, 0, 2)
        return AJ, Jt.transpose(1, 2) @ AJ

    def ggn_diag(self, theta: Tensor, X: Tensor, w: Tensor, *, chunk: int = 256) -> Tensor:
        """Diagonal of the weighted GGN for every model, ``(B, K)``."""
        rows = []
        for t, wb in zip(theta, w):
            rows.append(sum(wb[s:s + chunk] @ self.sample_ggn_diag(t, X[s:s + chunk])
                            for s in range(0, len(X), chunk)))
        return torch.stack(rows)

    def kfac(self, theta: Tensor, X: Tensor, w: Tensor) -> list[tuple[Tensor, Tensor]]:
        raise ValueError(
            f"hessian='kfac' needs per-layer Kronecker factors, available for the 'linear' "
            f"and 'mlp' probes; {type(self).__name__} supports hessian='diag' or 'full'."
        )

    def ggn_vp(self, theta: Tensor, X: Tensor, w: Tensor, V: Tensor) -> Tensor:
        """GGN-vector products ``(sum_j w_j J_j^T Lambda_j J_j) V`` for ``V`` of shape (r, K)."""
        f = lambda t: self.logits(t[None], X)[0]
        logits, pullback = vjp(f, theta)
        p = torch.softmax(logits, -1)
        def one(v):
            Jv = jvp(f, (theta,), (v,))[1]
            return pullback(w[:, None] * softmax_curvature_apply(p, Jv))[0]
        return vmap(one)(V)

    def hvp(self, theta: Tensor, X: Tensor, Y: Tensor, w: Tensor, V: Tensor) -> Tensor:
        """Exact Hessian-vector products of ``sum_j w_j CE_j`` at one ``theta``, ``V`` of shape (r, K)."""
        gradient = grad(lambda t: (self.ce(t[None], X, Y)[0] * w).sum())
        return vmap(lambda v: jvp(gradient, (theta,), (v,))[1])(V)

    def hessian(self, theta: Tensor, X: Tensor, Y: Tensor, w: Tensor, *, chunk: int = 256) -> Tensor:
        """Exact Hessian of ``sum_j w_j CE_j`` at one ``theta``, dense ``(K, K)``, from Hessian-vector
        products with ``chunk`` basis vectors at a time (bounded memory for wide probes)."""
        eye = torch.eye(self.n_params, dtype=theta.dtype, device=theta.device)
        return torch.cat([self.hvp(theta, X, Y, w, eye[s:s + chunk]) for s in range(0, self.n_params, chunk)])

    def per_sample_grads(self, theta: Tensor, X: Tensor, Y: Tensor) -> Tensor:
        """``grad CE_j(theta)`` for every sample, ``(n, K)``."""
        def one(x, y):
            return grad(lambda t: self.ce(t[None], x[None], y[None])[0, 0])(theta)
        return vmap(one)(X, Y)


def _softmax_(Z: Tensor, dim: int) -> Tensor:
    """``softmax(Z)`` along ``dim`` in ``Z``'s own storage: no new array of ``Z``'s size (the passes over the data
    hold ``n C B`` numbers, and a fresh allocation of that size costs as much as the arithmetic)."""
    Z.sub_(Z.amax(dim, keepdim=True)).exp_()
    return Z.div_(Z.sum(dim, keepdim=True))


BLOCK_BYTES = 4 * 2**20
"""Size of the row blocks of the linear probe's passes over the data (a few MiB: within the L2/L3 caches)."""


class LinearProbe(Probe):
    """Multinomial logistic regression ``logits = [x, 1] W``, ``W`` of shape (d+1, C)."""

    def __init__(self, n_features: int, n_classes: int):
        self.n_features, self.n_classes = n_features, n_classes
        self.n_params = (n_features + 1) * n_classes
        self._design_memo = None

    def __getstate__(self):
        return {**self.__dict__, "_design_memo": None}

    def _design(self, X: Tensor, squared: bool = False) -> Tensor:
        """``[X, 1]`` (``squared``: its elementwise square), kept for the last ``X`` seen while it is unchanged:
        the passes over the training data then reuse one copy instead of building ``n (d + 1)`` numbers each."""
        memo = self._design_memo
        if memo is None or memo[0]() is not X or memo[1] != X._version:
            memo = self._design_memo = (weakref.ref(X), X._version, {})
        if squared not in memo[2]:
            memo[2][squared] = self._design(X) ** 2 if squared else _augment(X)
        return memo[2][squared]

    def init(self, seed, *, dtype, device):
        """PyTorch's default ``nn.Linear`` initialisation, drawn as ``torch.manual_seed(seed)`` would.

        The draws come from a local CPU generator (the caller's random state is
        untouched) and are then moved, so every device starts from the same weights.
        """
        generator = torch.Generator().manual_seed(int(seed))
        block = _linear_block(self.n_features, self.n_classes, generator, dtype)
        return block.reshape(-1).to(device)

    def weights(self, theta: Tensor) -> Tensor:
        return theta.view(len(theta), self.n_features + 1, self.n_classes)

    def _fold(self, theta: Tensor) -> Tensor:
        """All models' weights side by side, ``(d+1, C*B)``, column ``c*B + b``."""
        return self.weights(theta).permute(1, 2, 0).reshape(self.n_features + 1, -1)

    def _unfold(self, G: Tensor, B: int) -> Tensor:
        """Inverse of :meth:`_fold` for a ``(d+1, C*B)`` result: ``(B, K)``."""
        return G.view(-1, self.n_classes, B).permute(2, 0, 1).reshape(B, -1)

    def _probabilities_ncb(self, theta: Tensor, Xa: Tensor) -> Tensor:
        """Softmax outputs in the GEMM's ``(n, C, B)`` layout, where the class reduction vectorises over models."""
        return _softmax_((Xa @ self._fold(theta)).view(len(Xa), self.n_classes, -1), 1)

    def logits(self, theta, X):
        return (_augment(X) @ self._fold(theta)).view(len(X), self.n_classes, -1).permute(2, 0, 1)

    def _blocks(self, n: int, width: int) -> range:
        """Row offsets of the blocks a pass over the data works through, :data:`BLOCK_BYTES` of a ``(rows, width)``
        float64 array each, so that a block's softmax and residual stay in cache between its two GEMMs."""
        return range(0, n, max(64, BLOCK_BYTES // (8 * max(1, width))))

    def _residual_pass(self, theta: Tensor, X: Tensor, Y: Tensor, w: Tensor, keep: bool) -> tuple[Tensor, Tensor]:
        """``sum_j w_bj [x_j, 1] r_bj^T`` with ``r_bj = p_bj - e_yj``, ``(B, K)``, row block by row block (the
        forward GEMM, the in-place softmax and residual, the accumulating backward GEMM); ``keep``: also every
        ``p_bj`` in an ``(n, C, B)`` array, else None."""
        Xa, W = self._design(X), self._fold(theta)
        n, C, B = len(X), self.n_classes, len(theta)
        onehot = torch.nn.functional.one_hot(Y, C).to(Xa.dtype)[:, :, None]
        weights = w.T[:, None, :].contiguous()
        P = Xa.new_empty(n, C, B) if keep else None
        G = Xa.new_zeros(Xa.shape[1], C * B)
        blocks = self._blocks(n, C * B)
        for start in blocks:
            rows = slice(start, start + blocks.step)
            Z = torch.mm(Xa[rows], W, out=P[rows].view(-1, C * B)) if keep else Xa[rows] @ W
            Z = _softmax_(Z.view(-1, C, B), 1)
            R = torch.sub(Z, onehot[rows]) if keep else Z.sub_(onehot[rows])
            G.addmm_(Xa[rows].T, R.mul_(weights[rows]).view(-1, C * B))
        return self._unfold(G, B), P

    def _ggn_pass(self, X: Tensor, P: Tensor, weights: Tensor) -> Tensor:
        """``sum_j w_bj [x_j, 1]^2 (p_bj - p_bj^2)`` for probabilities ``P`` ``(n, C, B)`` (overwritten) and
        ``weights`` ``(n, 1, B)``, row block by row block; ``(B, K)``."""
        Xa2, (n, C, B) = self._design(X, squared=True), P.shape
        G = Xa2.new_zeros(Xa2.shape[1], C * B)
        blocks = self._blocks(n, C * B)
        for start in blocks:
            rows = slice(start, start + blocks.step)
            Q = P[rows].addcmul_(P[rows], P[rows], value=-1).mul_(weights[rows])
            G.addmm_(Xa2[rows].T, Q.view(-1, C * B))
        return self._unfold(G, B)

    def grad(self, theta, X, Y, w):
        """``sum_j w_bj [x_j, 1] (p_bj - e_yj)^T`` for all models: two folded GEMMs per row block."""
        return self._residual_pass(theta, X, Y, w, keep=False)[0]

    def grad_and_ggn_diag(self, theta, X, Y, w):
        """One forward GEMM for both: ``R = w (P - onehot)`` gives the gradient, and the kept ``P`` gives
        ``sum_j w_bj [x_j, 1]^2 (p_bj - p_bj^2)`` for a boolean mask ``rows`` of the models with one more GEMM
        (called once: with every model, it overwrites ``P``)."""
        g, P = self._residual_pass(theta, X, Y, w, keep=True)

        def ggn_diag(rows):
            every = bool(rows.all())                 # then P itself is overwritten: it is not needed again
            return self._ggn_pass(X, P if every else P[:, :, rows], w[rows].T[:, None, :])
        return g, ggn_diag

    def ggn_diag(self, theta, X, w):
        return self._ggn_pass(X, self._probabilities_ncb(theta, self._design(X)), w.T[:, None, :])

    def ggn_vp(self, theta, X, w, V):
        """``J^T diag(w) Lambda J V`` with ``J v = [x, 1] V_mat``: two GEMMs over all of ``V``."""
        Xa = self._design(X)
        p = self._probabilities_ncb(theta[None], Xa)                          # (n, C, 1)
        JV = (Xa @ self._fold(V)).view(len(X), self.n_classes, -1)            # (n, C, r)
        R = (p * JV - p * (p * JV).sum(1, keepdim=True)) * w[:, None, None]
        return self._unfold(Xa.T @ R.view(len(X), -1), len(V))

    def sample_ggn_diag(self, theta, X):
        p = self.probabilities(theta[None], X)[0]
        return (_augment(X)[:, :, None] ** 2 * (p - p * p)[:, None, :]).reshape(len(X), -1)

    def sample_ggn_factor(self, theta, X):
        p = self.probabilities(theta[None], X)[0]
        return (_augment(X)[:, :, None, None] * softmax_sqrt(p)[:, None]).reshape(len(X), -1, self.n_classes)

    def jacobian_products(self, theta, X, A):
        """With ``J_j^T = [x_j, 1] kron I_C``: ``A J_j^T = T_j^T`` where ``T_j = (J_j A)``, one GEMM of ``2 K^2``
        FLOP per sample for all of them (``A`` symmetric), ``C`` times fewer than the generic product; then
        ``(J_j A J_j^T)_{c c'} = sum_k [x_j, 1]_k (A J_j^T)_{(k, c), c'}``."""
        Xa = _augment(X)
        T = (Xa @ A.view(self.n_features + 1, -1)).view(len(X), self.n_classes, -1)      # (n, C, K)
        AJ = T.transpose(1, 2)
        JAJ = (Xa[:, None, :] @ AJ.reshape(len(X), -1, self.n_classes * self.n_classes)).view(
            len(X), self.n_classes, self.n_classes)
        return AJ, JAJ

    def kfac(self, theta, X, w):
        """One block: ``A = sum w_j x_j x_j^T``, ``G = sum w_j Lambda_j / sum w_j``."""
        Xa = _augment(X)
        p = self.probabilities(theta[None], X)[0]
        return [(Xa.T @ (w[:, None] * Xa), _mean_softmax_curvature(p, w))]

    def ggn_full(self, theta, X, w, *, chunk: int = 2048):
        """Closed form ``sum_j w_j (x_j x_j^T) kron (diag p_j - p_j p_j^T)``; equals the CE Hessian.

        Class block ``(c, c')`` is ``[X, 1]^T diag(w (p_c delta_cc' - p_c p_c')) [X, 1]``: the blocks ``c' >= c``
        from one GEMM per class and ``chunk`` samples, the others by symmetry, ``n K^2 (C + 1) / 2C``
        multiply-adds in all (a dense ``J^T Lambda J`` takes ``n K^2``)."""
        Xa = _augment(X)
        k, C = Xa.shape[1], self.n_classes
        p = self.probabilities(theta[None], X)[0]
        wp = w[:, None] * p
        H = Xa.new_zeros(k, C, k, C)
        for start in range(0, len(X), chunk):
            rows, P, WP = Xa[start:start + chunk], p[start:start + chunk], wp[start:start + chunk]
            for c in range(C):
                weights = -WP[:, c:c + 1] * P[:, c:]
                weights[:, 0] += WP[:, c]
                H[:, c, :, c:] += (rows.T @ (rows[:, :, None] * weights[:, None, :]).reshape(len(rows), -1)).view(k, k, -1)
        for c in range(C - 1):
            H[:, c + 1:, :, c] = H[:, c, :, c + 1:].permute(1, 2, 0)
        return H.view(k * C, k * C)

    def hessian(self, theta, X, Y, w):
        return self.ggn_full(theta, X, w)

    def hvp(self, theta, X, Y, w, V):
        return self.ggn_vp(theta, X, w, V)

    def per_sample_grads(self, theta, X, Y):
        p = self.probabilities(theta[None], X)[0]
        p[torch.arange(len(Y), device=Y.device), Y] -= 1
        return (_augment(X)[:, :, None] * p[:, None, :]).reshape(len(X), -1)


ACTIVATIONS = ("relu", "gelu", "softplus")
"""Hidden-layer activations of :class:`MLPProbe`: the paper's ReLU, or a smooth one."""


def activation_and_slope(name: str, Z: Tensor) -> tuple[Tensor, Tensor]:
    """``phi(Z)`` and ``phi'(Z)`` for an activation of :data:`ACTIVATIONS` (exact GELU, softplus with beta 1)."""
    if name == "relu":
        return torch.relu(Z), (Z > 0).to(Z.dtype)
    if name == "softplus":
        return torch.nn.functional.softplus(Z), torch.sigmoid(Z)
    if name == "gelu":
        cdf = 0.5 * (1 + torch.erf(Z / math.sqrt(2)))
        return Z * cdf, cdf + Z * torch.exp(-0.5 * Z * Z) / math.sqrt(2 * math.pi)
    raise ValueError(f"activation={name!r} is not valid; choose one of {', '.join(ACTIVATIONS)}.")


class MLPProbe(Probe):
    """One hidden layer: ``logits = [phi([x, 1] W1), 1] W2``, ``phi`` ReLU (the paper's) by default.

    A smooth ``phi`` (``"gelu"``, ``"softplus"``) makes the objective twice
    differentiable everywhere, so a strict local minimum can be solved to a
    gradient tolerance: the ``converged`` tier then applies (it is refused for
    ReLU, whose optimum may sit on a kink).
    """

    def __init__(self, n_features: int, n_classes: int, hidden: int, activation: str = "relu"):
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation={activation!r} is not valid; choose one of {', '.join(ACTIVATIONS)}.")
        self.n_features, self.n_classes, self.hidden = n_features, n_classes, hidden
        self.activation = activation
        self.n_first = (n_features + 1) * hidden
        self.n_params = self.n_first + (hidden + 1) * n_classes

    def init(self, seed, *, dtype, device):
        """``nn.Sequential(Linear(d, h), ReLU(), Linear(h, C))`` as built after ``torch.manual_seed(seed)``.

        Drawn from a local CPU generator and moved to ``device`` (see :meth:`LinearProbe.init`).
        """
        generator = torch.Generator().manual_seed(int(seed))
        blocks = [_linear_block(n_in, n_out, generator, dtype).reshape(-1)
                  for n_in, n_out in ((self.n_features, self.hidden), (self.hidden, self.n_classes))]
        return torch.cat(blocks).to(device)

    def weights(self, theta: Tensor) -> tuple[Tensor, Tensor]:
        B = len(theta)
        W1 = theta[:, :self.n_first].view(B, self.n_features + 1, self.hidden)
        W2 = theta[:, self.n_first:].view(B, self.hidden + 1, self.n_classes)
        return W1, W2

    def _forward(self, theta, X):
        W1, W2 = self.weights(theta)
        Z = _fold_matmul(_augment(X), W1).transpose(0, 1)
        A, slope = activation_and_slope(self.activation, Z)
        H = _augment(A)
        return slope, H, W2, H @ W2

    def logits(self, theta, X):
        return self._forward(theta, X)[3]

    def grad(self, theta, X, Y, w):
        slope, H, W2, logits = self._forward(theta, X)
        R = torch.softmax(logits, -1)
        R[:, torch.arange(len(Y), device=Y.device), Y] -= 1
        R = w[..., None] * R
        g2 = H.transpose(1, 2) @ R
        delta = (R @ W2[:, :-1].transpose(1, 2)) * slope
        g1 = _fold_matmul_t(_augment(X), delta.transpose(0, 1))
        return torch.cat([g1.reshape(len(theta), -1), g2.reshape(len(theta), -1)], 1)

    def ggn_diag(self, theta, X, w):
        """Layer 2: ``sum w h_k^2 Lambda_cc``; layer 1: ``sum w x_m^2 phi'(z_k)^2 (W2 Lambda W2^T)_kk``."""
        slope, H, W2, logits = self._forward(theta, X)
        P = torch.softmax(logits, -1)
        V = W2[:, :-1]                                             # (B, h, C)
        q = P @ (V * V).transpose(1, 2) - (P @ V.transpose(1, 2)) ** 2
        d1 = _fold_matmul_t(_augment(X) ** 2, (w[..., None] * slope * slope * q).transpose(0, 1))
        d2 = (H * H).transpose(1, 2) @ (w[..., None] * (P - P * P))
        return torch.cat([d1.reshape(len(theta), -1), d2.reshape(len(theta), -1)], 1)

    def kfac(self, theta, X, w):
        """Per layer ``A = sum w a a^T`` (inputs), ``G = sum w B^T Lambda B / sum w`` (output curvature)."""
        slope, H, W2, logits = self._forward(theta[None], X)
        slope, H, W2, p = slope[0], H[0], W2[0], torch.softmax(logits[0], -1)
        Xa = _augment(X)
        V = W2[:-1]                                                 # (h, C)
        Bj = slope[:, :, None] * V[None]                            # (n, h, C): d logits / d z
        lam_B = softmax_curvature_apply(p[:, None, :], Bj)          # (n, h, C)
        G1 = torch.einsum("j,jkc,jlc->kl", w, Bj, lam_B) / w.sum()
        return [(Xa.T @ (w[:, None] * Xa), G1), (H.T @ (w[:, None] * H), _mean_softmax_curvature(p, w))]


class ModuleProbe(Probe):
    """Any ``torch.nn.Module`` mapping inputs to logits, through :func:`torch.func.functional_call`.

    Supports the ``diag`` and ``full`` structures (per-sample Jacobians); the
    parameters are the module's, flattened in ``named_parameters`` order.
    """

    def __init__(self, module: torch.nn.Module, n_classes: int):
        self.module = module
        self.names = [name for name, _ in module.named_parameters()]
        self.shapes = [p.shape for _, p in module.named_parameters()]
        self.sizes = [math.prod(s) for s in self.shapes]
        self.n_params, self.n_classes = sum(self.sizes), n_classes
        self._initial = torch.cat([p.detach().reshape(-1) for p in module.parameters()])

    def init(self, seed, *, dtype, device):
        """The module's own parameters: seed it before building it."""
        return self._initial.to(dtype=dtype, device=device).clone()

    def _unflatten(self, theta: Tensor) -> dict[str, Tensor]:
        parts = torch.split(theta, self.sizes)
        return {n: p.view(s) for n, p, s in zip(self.names, parts, self.shapes)}

    def logits(self, theta, X):
        return vmap(lambda t: functional_call(self.module, self._unflatten(t), (X,)))(theta)

    def _jacobian(self, theta, X):
        """Per-sample Jacobians ``(n, C, K)``, one sample at a time under :func:`vmap`: ``n C`` single-sample
        backward passes (a batched ``jacrev`` would push each of its ``n C`` rows through all ``n`` samples)."""
        one = lambda x: jacrev(lambda t: self.logits(t[None], x[None])[0, 0])(theta)
        return vmap(one)(X)

    def ggn_diag(self, theta, X, w, *, chunk: int | None = None):
        """As :meth:`Probe.ggn_diag`, with chunks of at most ``2**24 / (C K)`` samples (128 MiB of float64 Jacobians)."""
        chunk = chunk or max(1, min(256, 2 ** 24 // (self.n_classes * self.n_params)))
        return super().ggn_diag(theta, X, w, chunk=chunk)

    def activations_per_sample(self, x: Tensor) -> int:
        """Number of values every submodule outputs for one input ``x``: the forward pass's memory per sample."""
        sizes: list[int] = []
        hooks = [m.register_forward_hook(lambda _m, _i, out: sizes.append(out.numel()))
                 for m in self.module.modules() if m is not self.module]
        try:
            with torch.no_grad():
                functional_call(self.module, self._unflatten(self._initial.to(x)), (x[None],))
        finally:
            for hook in hooks:
                hook.remove()
        return sum(sizes)


def _mean_softmax_curvature(p: Tensor, w: Tensor) -> Tensor:
    """``sum_j w_j (diag p_j - p_j p_j^T) / sum_j w_j``."""
    return (torch.diag((w[:, None] * p).sum(0)) - (w[:, None] * p).T @ p) / w.sum()


def _linear_block(n_in: int, n_out: int, generator: torch.Generator, dtype) -> Tensor:
    """``[W^T; b]`` (n_in + 1, n_out) drawn like ``nn.Linear.reset_parameters``, on the CPU.

    Same draws, in the same order, as ``nn.Linear(n_in, n_out)`` built from a
    global generator in the state of ``generator``.
    """
    weight = torch.empty(n_out, n_in, dtype=dtype)
    torch.nn.init.kaiming_uniform_(weight, a=math.sqrt(5), generator=generator)
    bound = 1 / math.sqrt(n_in) if n_in > 0 else 0
    bias = torch.empty(n_out, dtype=dtype).uniform_(-bound, bound, generator=generator)
    return torch.cat([weight.T, bias[None]])


def make_probe(kind: str | torch.nn.Module, n_features: int, n_classes: int, hidden: int = 32,
               activation: str = "relu") -> Probe:
    """The front door: ``"linear"``, ``"mlp"`` (hidden ``activation``) or a module (generic path)."""
    if isinstance(kind, torch.nn.Module):
        return ModuleProbe(kind, n_classes)
    builders = {"linear": lambda: LinearProbe(n_features, n_classes),
                "mlp": lambda: MLPProbe(n_features, n_classes, hidden, activation)}
    if kind not in builders:
        raise ValueError(f"probe={kind!r} is not valid; choose 'linear', 'mlp' or pass a torch.nn.Module.")
    return builders[kind]()
