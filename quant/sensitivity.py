"""Second-order sensitivity of every weight row (output channel) of a model's Conv2d/Linear layers.

RMSMP gives its few 8-bit rows to the rows where the loss is most sensitive to weight noise,
measured by the curvature of the loss in that row's weights: the row's diagonal Hessian block
H_rr (K x K for a row of K weights). Two estimators, both built on Hessian-vector products
(double backprop through ``torch.autograd.grad(..., create_graph=True)``), never on H itself:

* ``hutchinson_row_traces``: Tr(H_rr) = E[z_r . (H z)_r] for Rademacher z. One product with z
  over all weights serves every row of every layer, since the cross-row terms vanish in
  expectation; they only add variance, which the returned standard error covers.
* ``power_iteration_row_eigs``: the top eigenvalue of each H_rr (the paper's measure), layer by
  layer with all rows of a layer iterated at once, and random row signs so that the cross-row
  blocks H_rq cancel in expectation (a block-diagonal approximation that the iteration really
  computes, rather than one that the iterate drifts away from).

``fisher_row_traces`` is the first-order stand-in: the empirical Fisher's diagonal (squared
gradients) summed per row, one backward pass per batch. The two Hessian estimators are
stochastic on a real network: the coupling to other rows enters as zero-mean noise,
which the returned standard errors measure. A Hessian-vector product costs about two backward
passes.

The Hessian is that of the mean of ``loss_fn(model, batch)`` over ``batches``, with the model in
whatever mode it is given (use ``model.eval()`` for the deployed network's BatchNorm). Only the
Conv2d/Linear weights are differentiated; all other parameters are held fixed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any, NamedTuple

import torch
from torch import Tensor, nn

LossFn = Callable[[nn.Module, Any], Tensor]
"""``loss_fn(model, batch) -> scalar tensor``; ``batch`` is one item of ``batches``, e.g. (x, y)."""


class RowTraces(NamedTuple):
    """Per-row Hutchinson trace estimates and their standard errors, keyed by layer name."""

    trace: dict[str, Tensor]
    stderr: dict[str, Tensor]


class RowEigs(NamedTuple):
    """Per-row top Hessian-block eigenvalue estimates and their standard errors, by layer name."""

    eig: dict[str, Tensor]
    stderr: dict[str, Tensor]


def weight_layers(model: nn.Module) -> list[tuple[str, nn.Conv2d | nn.Linear]]:
    """(name, module) of every Conv2d/Linear in ``model``; their weight rows are output channels."""
    return [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Conv2d | nn.Linear)]


@contextmanager
def _differentiable_weights(model: nn.Module) -> Iterator[tuple[list[str], list[Tensor]]]:
    """The layer names and weights, with requires_grad on for the duration (restored after)."""
    layers = weight_layers(model)
    if not layers:
        raise ValueError("the model has no Conv2d/Linear layer whose rows could be scored")
    weights = [m.weight for _, m in layers]
    flags = [w.requires_grad for w in weights]
    try:
        for w in weights:
            w.requires_grad_(True)
        yield [n for n, _ in layers], weights
    finally:
        for w, f in zip(weights, flags, strict=True):
            w.requires_grad_(f)


def _list_batches(batches: Iterable[Any]) -> list[Any]:
    out = list(batches)
    if not out:
        raise ValueError("batches is empty; pass at least one (x, y) batch")
    return out


def _gradients(
    model: nn.Module, loss_fn: LossFn, batch: Any, weights: list[Tensor]
) -> list[Tensor]:
    """d loss / d weights for one batch, kept differentiable for Hessian-vector products."""
    with torch.enable_grad():
        loss = loss_fn(model, batch)
        if not isinstance(loss, Tensor) or loss.numel() != 1:
            raise ValueError("loss_fn(model, batch) must return a scalar tensor (e.g. a mean loss)")
        if not torch.isfinite(loss):
            raise ValueError(f"loss_fn returned a non-finite loss ({float(loss)}) on a batch")
        if not loss.requires_grad:
            raise ValueError("the loss does not depend on any Conv2d/Linear weight of the model")
        grads = torch.autograd.grad(loss, weights, create_graph=True, allow_unused=True)
    return [torch.zeros_like(w) if g is None else g for g, w in zip(grads, weights, strict=True)]


def _hvp(grads: list[Tensor], weights: list[Tensor], v: list[Tensor]) -> list[Tensor]:
    """H v for the Hessian of the loss behind ``grads`` (the graph is kept for the next product)."""
    terms = [(g * u).sum() for g, u in zip(grads, v, strict=True) if g.requires_grad]
    if not terms:  # the gradient is constant: the loss is linear in the weights
        return [torch.zeros_like(w) for w in weights]
    with torch.enable_grad():
        hv = torch.autograd.grad(sum(terms), weights, retain_graph=True, allow_unused=True)
    return [torch.zeros_like(w) if h is None else h for h, w in zip(hv, weights, strict=True)]


def _row_sum(t: Tensor) -> Tensor:
    """Sum over each row (output channel), in float64."""
    return t.detach().double().reshape(t.shape[0], -1).sum(dim=1)


def _rademacher(shape: tuple[int, ...], gen: torch.Generator, like: Tensor) -> Tensor:
    """Independent +-1 entries of ``shape``, in ``like``'s dtype."""
    return torch.randint(0, 2, shape, generator=gen).to(like) * 2 - 1


def _row_shape(w: Tensor) -> tuple[int, ...]:
    """Shape that broadcasts one value per row (output channel) against ``w``."""
    return (w.shape[0],) + (1,) * (w.ndim - 1)


def _unit_rows(u: Tensor, prev: Tensor) -> Tensor:
    """Each row of ``u`` scaled to unit norm; a zero row keeps ``prev``'s row (H_rr v_r = 0)."""
    norm = u.reshape(u.shape[0], -1).norm(dim=1).view(_row_shape(u))
    return torch.where(norm > 0, u / torch.where(norm > 0, norm, 1), prev)


def hutchinson_row_traces(
    model: nn.Module,
    loss_fn: LossFn,
    batches: Iterable[Any],
    n_samples: int = 16,
    seed: int = 0,
) -> RowTraces:
    """Tr(H_rr) of every row by Hutchinson's estimator, with its standard error.

    Per batch, ``n_samples`` Rademacher vectors z over all Conv2d/Linear weights each give, via
    one Hessian-vector product, the unbiased per-row estimate sum_{i in row r} z_i (H z)_i. The
    trace is the mean over batches of the per-batch sample means; its standard error is
    sqrt(sum_b s_b^2 / n_samples) / n_batches with s_b^2 the per-batch sample variance, i.e. the
    Monte-Carlo error of estimating the trace of the given batches' mean Hessian.
    Cost: per batch one gradient and ``n_samples`` Hessian-vector products.
    """
    if not isinstance(n_samples, int) or n_samples < 2:
        raise ValueError(f"n_samples must be an int >= 2 (for a standard error), got {n_samples!r}")
    data = _list_batches(batches)
    gen = torch.Generator().manual_seed(seed)
    with _differentiable_weights(model) as (names, weights):
        means = [torch.zeros(w.shape[0], dtype=torch.float64) for w in weights]
        variances = [torch.zeros(w.shape[0], dtype=torch.float64) for w in weights]
        for batch in data:
            grads = _gradients(model, loss_fn, batch, weights)
            samples: list[list[Tensor]] = [[] for _ in weights]
            for _ in range(n_samples):
                z = [_rademacher(w.shape, gen, w) for w in weights]
                hz = _hvp(grads, weights, z)
                for acc, zi, hi in zip(samples, z, hz, strict=True):
                    acc.append(_row_sum(zi * hi))
            for i, acc in enumerate(samples):
                s = torch.stack(acc)
                means[i] += s.mean(dim=0) / len(data)
                variances[i] += s.var(dim=0) / n_samples
            del grads
    stderr = [v.sqrt() / len(data) for v in variances]
    return RowTraces(dict(zip(names, means, strict=True)), dict(zip(names, stderr, strict=True)))


def power_iteration_row_eigs(
    model: nn.Module,
    loss_fn: LossFn,
    batches: Iterable[Any],
    iters: int = 10,
    seed: int = 0,
) -> RowEigs:
    """Largest-magnitude eigenvalue (signed) of every row's Hessian block H_rr, by power iteration.

    One layer at a time, all rows of the layer at once: v lives in that layer's weight only (so
    other layers' rows cannot leak in) and holds one unit vector per row. A step forms, for each
    batch b with fresh Rademacher signs s (one per row), u_r = s_r (H_b (s * v))_r, averages u
    over the batches and normalises each row. As E[s_r s_q] = 0 for q != r, E[u_r] = H_rr v_r:
    this is power iteration on the block-diagonal part of the layer's Hessian (cross-row coupling
    ignored), the blocks H_rq adding only zero-mean noise. Without the signs, u_r would be
    H_rr v_r + sum_q H_rq v_q and the rows would drift toward the layer's top eigenvector (on
    ResNet-20 that overstated four rows' block eigenvalues 2-13x, against exact per-row runs).

    The estimate is the Rayleigh quotient v_r . u_r averaged over the last ``iters - iters // 2``
    steps (the first half is burn-in); its standard error is their spread over sqrt(count),
    treating steps as independent (it does not cover the downward bias of a not fully converged
    v). On an exactly block-diagonal H this is plain power iteration and has no noise. Cost:
    ``iters`` Hessian-vector products per layer and batch; one restricted to a layer is cheaper
    than a full one, but a step over all 20 layers of ResNet-20 still costs about 5 full ones.
    Every batch's gradient graph is held in memory throughout: pass a few batches, not a data set.
    """
    if not isinstance(iters, int) or iters < 3:
        raise ValueError(f"iters must be an int >= 3 (burn-in + >= 2 averaged), got {iters!r}")
    data = _list_batches(batches)
    gen = torch.Generator().manual_seed(seed)
    eig, stderr = {}, {}
    with _differentiable_weights(model) as (names, weights):
        grads = [_gradients(model, loss_fn, batch, weights) for batch in data]
        for i, (name, w) in enumerate(zip(names, weights, strict=True)):
            v = torch.randn(w.shape, generator=gen).to(w)
            v = _unit_rows(v, v)
            quotients = []
            for step in range(iters):
                u = torch.zeros_like(w)
                for g in grads:
                    s = _rademacher(_row_shape(w), gen, w)
                    u += s * _hvp([g[i]], [w], [s * v])[0] / len(data)
                if step >= iters // 2:
                    quotients.append(_row_sum(v * u))
                v = _unit_rows(u, v)
            q = torch.stack(quotients)
            eig[name], stderr[name] = q.mean(dim=0), q.std(dim=0) / len(q) ** 0.5
        del grads
    return RowEigs(eig, stderr)


def fisher_row_traces(
    model: nn.Module, loss_fn: LossFn, batches: Iterable[Any]
) -> dict[str, Tensor]:
    """Tr(F_rr) of every row: the empirical Fisher's diagonal summed over the row's weights.

    The mean over ``batches`` of the squared gradient of the batch loss, row by row: with
    one-sample batches the empirical Fisher, with larger ones its mini-batch form (the squared
    mean gradient plus 1/batch of the per-sample variance). A first-order stand-in for the
    Hessian trace, at one backward pass per batch and with no sampling noise of its own.
    """
    data = _list_batches(batches)
    with _differentiable_weights(model) as (names, weights):
        out = [torch.zeros(w.shape[0], dtype=torch.float64) for w in weights]
        for batch in data:
            grads = _gradients(model, loss_fn, batch, weights)
            for acc, g in zip(out, grads, strict=True):
                acc += _row_sum(g * g) / len(data)
            del grads
    return dict(zip(names, out, strict=True))
