"""Per-row Hessian (and Fisher) sensitivities against ones known in closed form."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F  # noqa: N812
from torch import nn

from rmsmp.quant.sensitivity import (
    fisher_row_traces,
    hutchinson_row_traces,
    power_iteration_row_eigs,
    weight_layers,
)

K = 5
SPLIT = 4  # rows 0-3 belong to layer "0", rows 4-5 to layer "1"
N_ROWS = 6
BATCHES = [(torch.zeros(1), torch.zeros(1))] * 2  # the quadratic loss ignores the data


@pytest.fixture(autouse=True)
def _one_thread():
    """Intra-op threads buy nothing on these tiny tensors, and on a busy machine their barriers
    cost seconds per test."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _rotated(rng: np.random.Generator, eigs: np.ndarray) -> np.ndarray:
    """Symmetric matrix with eigenvalues ``eigs`` in a random orthonormal basis."""
    q, _ = np.linalg.qr(rng.normal(size=(len(eigs), len(eigs))))
    return q @ np.diag(eigs) @ q.T


def _row_blocks(rng: np.random.Generator) -> list[np.ndarray]:
    """Row blocks with a clear top eigenvalue: PSD, one with largest |eig| negative, a zero."""
    blocks = [_rotated(rng, s * np.array([5.0, 2.0, 1.0, 0.5, 0.1])) for s in (0.5, 1.0, 2.0)]
    blocks.append(_rotated(rng, np.array([-6.0, 2.0, 1.0, -0.5, 0.0])))
    blocks.append(_rotated(rng, 3.0 * np.array([5.0, 2.0, 1.0, 0.5, 0.1])))
    blocks.append(np.zeros((K, K)))
    return blocks


def _block_diag(blocks: list[np.ndarray]) -> np.ndarray:
    a = np.zeros((N_ROWS * K, N_ROWS * K))
    for r, b in enumerate(blocks):
        a[r * K : (r + 1) * K, r * K : (r + 1) * K] = b
    return a


def _row_block(a: np.ndarray, r: int) -> np.ndarray:
    return a[r * K : (r + 1) * K, r * K : (r + 1) * K]


def _quadratic(a: np.ndarray) -> tuple[nn.Module, object]:
    """Two Linear layers (rows of K weights) and loss 0.5 * w^T A w, w their row-major weights."""
    model = nn.Sequential(
        nn.Linear(K, SPLIT, bias=False), nn.Linear(K, N_ROWS - SPLIT, bias=False)
    ).double()
    at = torch.from_numpy(a)

    def loss_fn(m: nn.Module, batch: object) -> torch.Tensor:
        w = torch.cat([m[0].weight.flatten(), m[1].weight.flatten()])
        return 0.5 * w @ at @ w

    return model, loss_fn


def _rows(res: dict[str, torch.Tensor]) -> np.ndarray:
    assert {k: tuple(v.shape) for k, v in res.items()} == {"0": (SPLIT,), "1": (N_ROWS - SPLIT,)}
    return torch.cat([res["0"], res["1"]]).numpy()


def _top(block: np.ndarray) -> float:
    """Eigenvalue of largest magnitude, signed."""
    ev = np.linalg.eigvalsh(block)
    return float(ev[np.argmax(np.abs(ev))])


def test_hutchinson_matches_block_traces_with_coupling():
    rng = np.random.default_rng(0)
    a = _block_diag(_row_blocks(rng))
    coupling = rng.normal(size=a.shape)
    a = a + 0.3 * (coupling + coupling.T) / 2  # dense: every row coupled to every other
    model, loss_fn = _quadratic(a)
    n_samples = 400
    res = hutchinson_row_traces(model, loss_fn, BATCHES, n_samples=n_samples)
    trace, se = _rows(res.trace), _rows(res.stderr)
    true = np.array([np.trace(_row_block(a, r)) for r in range(N_ROWS)])
    assert (np.abs(trace - true) <= 4 * se).all()
    # The standard error is honest: for Rademacher z the per-sample variance of row r's estimate
    # is 4 * (sum over in-row off-diagonal pairs of A_ij^2) + sum of squared cross-row entries.
    exact_var = np.empty(N_ROWS)
    for r in range(N_ROWS):
        block = _row_block(a, r)
        in_row = np.sum(block**2) - np.sum(np.diag(block) ** 2)
        exact_var[r] = 2 * in_row + np.sum(a[r * K : (r + 1) * K] ** 2) - np.sum(block**2)
    expected_se = np.sqrt(exact_var / (n_samples * len(BATCHES)))
    np.testing.assert_allclose(se, expected_se, rtol=0.2)


def test_hutchinson_is_exact_for_a_diagonal_hessian():
    """z_i^2 = 1, so a diagonal Hessian leaves no randomness: traces exact, standard error 0."""
    d = np.random.default_rng(3).uniform(-1, 4, size=N_ROWS * K)
    model, loss_fn = _quadratic(np.diag(d))
    res = hutchinson_row_traces(model, loss_fn, BATCHES, n_samples=3)
    np.testing.assert_allclose(_rows(res.trace), d.reshape(N_ROWS, K).sum(axis=1), rtol=1e-12)
    assert (_rows(res.stderr) == 0).all()


def test_power_iteration_matches_block_eigenvalues_despite_cross_layer_coupling():
    rng = np.random.default_rng(1)
    blocks = _row_blocks(rng)
    a = _block_diag(blocks)
    cross = rng.normal(size=(SPLIT * K, (N_ROWS - SPLIT) * K))
    a[: SPLIT * K, SPLIT * K :] = cross  # layer "0" rows coupled to layer "1" rows
    a[SPLIT * K :, : SPLIT * K] = cross.T
    model, loss_fn = _quadratic(a)
    res = power_iteration_row_eigs(model, loss_fn, BATCHES, iters=40)
    eig = _rows(res.eig)
    for r, b in enumerate(blocks):
        top = _top(b)
        assert abs(eig[r] - top) <= 1e-3 * max(abs(top), 1e-9), (r, eig[r], top)
    assert eig[3] < 0 and eig[5] == 0.0
    assert (_rows(res.stderr) <= 1e-3 * (np.abs(eig) + 1e-9)).all()


def test_power_iteration_not_pulled_by_in_layer_coupling():
    """Rows coupled within a layer still give their own block's eigenvalue, unlike plain
    row-normalised power iteration, which drifts toward the layer's top eigenvector."""
    rng = np.random.default_rng(2)
    blocks = [_rotated(rng, np.array([5.0, 1.0, 0.5, 0.2, 0.1])) for _ in range(N_ROWS)]
    a = _block_diag(blocks)
    a[: SPLIT * K, : SPLIT * K] += 0.3  # every row of layer "0" coupled to all its others
    a -= _block_diag([np.full((K, K), 0.3)] * SPLIT + [np.zeros((K, K))] * (N_ROWS - SPLIT))
    model, loss_fn = _quadratic(a)
    eig = _rows(power_iteration_row_eigs(model, loss_fn, BATCHES, iters=200).eig)
    true = np.array([_top(b) for b in blocks])
    np.testing.assert_allclose(eig, true, rtol=0.1)
    # Plain per-row power iteration on the coupled layer is off by far more than that on some row.
    v = np.ones((SPLIT, K))
    for _ in range(200):
        u = (a[: SPLIT * K, : SPLIT * K] @ v.ravel()).reshape(SPLIT, K)
        naive = np.sum(u * v, axis=1)
        v = u / np.linalg.norm(u, axis=1, keepdims=True)
    assert np.max(np.abs(naive - true[:SPLIT]) / true[:SPLIT]) > 0.5


def _tiny_net() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(4, 6, 3),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(6 * 6 * 6, 5),
    )


def _ce(model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    x, y = batch
    return F.cross_entropy(model(x), y)


def _tiny_batches() -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(0)
    return [
        (torch.randn(16, 3, 8, 8, generator=g), torch.randint(0, 5, (16,), generator=g))
        for _ in range(2)
    ]


def _linear_blocks(model: nn.Sequential, batches: list) -> list[np.ndarray]:
    """Exact H_rr of the last Linear under cross-entropy, averaged over the batches:
    mean over samples of p_r (1 - p_r) h h^T (h its input, p the softmax)."""
    h = torch.cat([model[:5](x) for x, _ in batches]).detach().double()
    p = torch.softmax(model[5](h.float()).double(), dim=1).detach()
    return [
        ((p[:, r] * (1 - p[:, r]))[:, None, None] * h[:, :, None] * h[:, None, :]).mean(0).numpy()
        for r in range(p.shape[1])
    ]


def test_both_run_on_a_conv_net_and_match_the_exact_linear_blocks():
    model, batches = _tiny_net(), _tiny_batches()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    model[0].weight.requires_grad_(False)  # restored to this afterwards
    tr = hutchinson_row_traces(model, _ce, batches, n_samples=64)
    ev = power_iteration_row_eigs(model, _ce, batches, iters=60)
    shapes = {"0": (4,), "2": (6,), "5": (5,)}
    for res in (tr.trace, tr.stderr, ev.eig, ev.stderr):
        assert {k: tuple(v.shape) for k, v in res.items()} == shapes
        assert all(torch.isfinite(v).all() for v in res.values())
    assert all((tr.stderr[k] > 0).all() for k in shapes)
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert not model[0].weight.requires_grad and model[2].weight.requires_grad
    assert all(p.grad is None for p in model.parameters())

    blocks = _linear_blocks(model, batches)
    true_tr = np.array([np.trace(b) for b in blocks])
    assert (np.abs(tr.trace["5"].numpy() - true_tr) <= 4 * tr.stderr["5"].numpy()).all()
    true_eig = np.array([np.linalg.eigvalsh(b)[-1] for b in blocks])
    assert (ev.eig["5"].numpy() <= true_eig * 1.05 + 4 * ev.stderr["5"].numpy()).all()
    # In-layer coupling (softmax) is strong here: it leaves v noisy, which biases the estimate
    # down by up to ~20% at 60 steps.
    np.testing.assert_allclose(ev.eig["5"].numpy(), true_eig, rtol=0.3)


def test_rejects_bad_inputs():
    model, batches = _tiny_net(), _tiny_batches()
    with pytest.raises(ValueError, match="n_samples"):
        hutchinson_row_traces(model, _ce, batches, n_samples=1)
    with pytest.raises(ValueError, match="iters"):
        power_iteration_row_eigs(model, _ce, batches, iters=2)
    with pytest.raises(ValueError, match="empty"):
        hutchinson_row_traces(model, _ce, [])
    with pytest.raises(ValueError, match="scalar"):
        hutchinson_row_traces(model, lambda m, b: m(b[0]), batches, n_samples=2)
    with pytest.raises(ValueError, match="no Conv2d/Linear"):
        power_iteration_row_eigs(nn.Sequential(nn.ReLU()), _ce, batches)
    assert weight_layers(nn.Sequential(nn.ReLU())) == []


def test_fisher_is_the_mean_squared_row_gradient() -> None:
    torch.manual_seed(0)
    layer = nn.Linear(3, 2, bias=False)
    data = [(torch.randn(1, 3), torch.randn(1, 2)) for _ in range(5)]

    def loss_fn(m: nn.Module, b: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        return 0.5 * ((m(b[0]) - b[1]) ** 2).sum()

    got = fisher_row_traces(layer, loss_fn, data)[""]  # a bare Linear's layer name
    w = layer.weight.detach().double()
    x, y = torch.cat([b[0] for b in data]).double(), torch.cat([b[1] for b in data]).double()
    want = (((x @ w.T - y) ** 2) * (x**2).sum(1, keepdim=True)).sum(0)
    assert got.shape == (2,) and torch.allclose(got, want / len(data))
