"""Row assignment, post-training quantisation and export against the integer reference."""

from __future__ import annotations

from collections import Counter, OrderedDict

import numpy as np
import pytest
import torch
from bnstats import randomize_bn
from torch import nn

from rmsmp.arch import FORMATS, AccelConfig
from rmsmp.quant.assign import (
    assign_rows,
    best_scale,
    nearest_level,
    relative_costs,
    row_counts,
)
from rmsmp.quant.export import export
from rmsmp.quant.quantize import UnsupportedLayerError, quantize


def _random_ratio(rng: np.random.Generator) -> dict[str, float]:
    names = list(rng.permutation(sorted(FORMATS))[: rng.integers(1, len(FORMATS) + 1)])
    fr = rng.dirichlet(np.ones(len(names)))
    return {n: float(f) for n, f in zip(names, fr, strict=True)}


def _brute_nearest(v: np.ndarray, levels: np.ndarray) -> np.ndarray:
    """Nearest level by exhaustive search (independent of the code under test)."""
    return levels[np.argmin(np.abs(v[..., None] - levels), axis=-1)]


def _rows_on_grid(rng: np.random.Generator, name: str, n: int, k: int) -> np.ndarray:
    """Rows whose values are exactly scaled levels of a format, with its extreme levels present."""
    levels = FORMATS[name].levels()
    rows = rng.choice(levels, size=(n, k)).astype(np.float64)
    rows[:, 0], rows[:, 1], rows[:, 2] = levels.max(), 1, -1
    return rows * rng.uniform(0.1, 2.0, size=(n, 1))


# ---- row_counts ---------------------------------------------------------------------------------


def test_row_counts_exact_total_and_close_to_ratio():
    rng = np.random.default_rng(0)
    for _ in range(500):
        n = int(rng.integers(0, 600))
        ratio = _random_ratio(rng)
        counts = row_counts(n, ratio)
        assert list(counts) == list(ratio)
        assert sum(counts.values()) == n
        for f, c in counts.items():
            assert c >= 0
            assert abs(c - n * ratio[f]) < 1 + 1e-9


def test_row_counts_paper_ratio_and_ties():
    assert row_counts(20, {"pot4": 0.6, "fixed4": 0.35, "fixed8": 0.05}) == {
        "pot4": 12,
        "fixed4": 7,
        "fixed8": 1,
    }
    # 16 * 0.6 = 9.6, 16 * 0.35 = 5.6, 16 * 0.05 = 0.8: leftovers go to the largest remainders.
    assert row_counts(16, {"pot4": 0.6, "fixed4": 0.35, "fixed8": 0.05}) == {
        "pot4": 10,
        "fixed4": 5,
        "fixed8": 1,
    }
    # equal remainders: dict order decides
    assert row_counts(1, {"fixed4": 0.5, "pot4": 0.5}) == {"fixed4": 1, "pot4": 0}
    assert row_counts(1, {"pot4": 0.5, "fixed4": 0.5}) == {"pot4": 1, "fixed4": 0}


@pytest.mark.parametrize(
    "ratio",
    [
        {"pot4": 0.5, "fixed4": 0.4},
        {"pot4": 1.2, "fixed4": -0.2},
        {"int4": 1.0},
        {"pot4": float("nan")},
        {},
    ],
)
def test_row_counts_rejects_bad_ratio(ratio):
    with pytest.raises(ValueError):
        row_counts(10, ratio)


# ---- best_scale ---------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(FORMATS))
def test_best_scale_levels_and_not_worse_than_max_scaling(name):
    fmt = FORMATS[name]
    levels = fmt.levels()
    rng = np.random.default_rng(1)
    w = np.concatenate(
        [rng.normal(size=(20, 50)), rng.laplace(size=(20, 50)), np.zeros((2, 50))], axis=0
    )
    alpha, err = best_scale(w, fmt)
    assert alpha.shape == err.shape == (42,)
    assert (alpha > 0).all()
    q = _brute_nearest(w / alpha[:, None], levels)
    assert np.isin(q, levels).all()
    np.testing.assert_allclose(err, np.mean((alpha[:, None] * q - w) ** 2, axis=1), rtol=1e-9)
    naive = np.abs(w).max(axis=1) / levels.max()
    naive = np.where(naive > 0, naive, 1.0)
    q0 = _brute_nearest(w / naive[:, None], levels)
    err0 = np.mean((naive[:, None] * q0 - w) ** 2, axis=1)
    assert (err <= err0 * (1 + 1e-12)).all()
    if fmt.bits == 4:  # clipping pays off for coarse grids
        assert (err[:40] < err0[:40]).any()
    assert (alpha[40:] == 1.0).all() and (err[40:] == 0.0).all()


@pytest.mark.parametrize("name", sorted(FORMATS))
def test_nearest_level_is_the_closest_level_and_midpoints_go_toward_zero(name):
    fmt = FORMATS[name]
    levels = fmt.levels()
    pos = levels[levels >= 0].astype(np.float64)
    mids = (pos[1:] + pos[:-1]) / 2
    rng = np.random.default_rng(1)
    v = np.concatenate([rng.normal(0, pos[-1] / 2, 2000), mids, -mids, pos, -pos, [3e9, -3e9]])
    dist = np.abs(v[:, None] - levels[None, :])
    # brute force: the closest level; of two equally close ones, the smaller magnitude
    closest = dist == dist.min(axis=1, keepdims=True)
    want = levels[np.argmin(np.where(closest, np.abs(levels)[None, :], np.inf), axis=1)]
    assert np.array_equal(nearest_level(v, fmt), want)


def test_best_scale_exact_for_representable_rows():
    rng = np.random.default_rng(2)
    for name, fmt in FORMATS.items():
        w = _rows_on_grid(rng, name, 5, 30)
        _, err = best_scale(w, fmt)
        assert (err <= 1e-24 * np.mean(w**2, axis=1)).all(), name


# ---- assign_rows --------------------------------------------------------------------------------


def test_assign_rows_outlier_row_gets_fixed8():
    rng = np.random.default_rng(3)
    k = 64
    outlier = rng.normal(size=k)
    outlier[[5, 40]] = [25.0, -30.0]
    w = np.concatenate(
        [_rows_on_grid(rng, "pot4", 12, k), _rows_on_grid(rng, "fixed4", 7, k), outlier[None]]
    )
    perm = rng.permutation(len(w))
    formats = assign_rows(w[perm], {"pot4": 0.6, "fixed4": 0.35, "fixed8": 0.05})
    by_row = {int(p): f for p, f in zip(perm, formats, strict=True)}
    assert by_row[19] == "fixed8"
    assert [by_row[i] for i in range(12)] == ["pot4"] * 12
    assert [by_row[i] for i in range(12, 19)] == ["fixed4"] * 7


def _total_cost(cost: np.ndarray, names: list[str], formats: list[str]) -> float:
    return float(sum(cost[r, names.index(f)] for r, f in enumerate(formats)))


def test_assign_rows_counts_and_beats_random_assignment():
    rng = np.random.default_rng(4)
    for trial in range(6):
        n, k = int(rng.integers(5, 40)), int(rng.integers(4, 80))
        kinds = rng.integers(0, 3, size=n)
        w = np.where(
            (kinds == 0)[:, None],
            rng.normal(size=(n, k)),
            np.where((kinds == 1)[:, None], rng.uniform(-1, 1, (n, k)), rng.laplace(size=(n, k))),
        ) * rng.uniform(0.01, 5, size=(n, 1))
        ratio = _random_ratio(rng)
        formats = assign_rows(w, ratio)
        counts = row_counts(n, ratio)
        assert Counter(formats) == Counter({f: c for f, c in counts.items() if c})
        names = sorted(FORMATS)
        cost = relative_costs(w, names)
        best = _total_cost(cost, names, formats)
        for _ in range(50):
            other = list(rng.permutation(formats))
            assert best <= _total_cost(cost, names, other) + 1e-12, trial


# ---- quantize + export on random chains ---------------------------------------------------------


@pytest.mark.parametrize("seed", range(24))
def test_quantize_export_matches_integer_graph(seed):
    rng = np.random.default_rng(100 + seed)
    model, shape = _build_chain(rng)
    x = torch.from_numpy(rng.normal(0, 1.5, size=(int(rng.integers(2, 9)), *shape))).float()
    ratio = _random_ratio(rng) if seed % 3 else "tiny"
    qmodel = quantize(model, x, ratio=ratio, act_bits=int(rng.integers(2, 8)))
    graph = export(qmodel)
    out_fq = qmodel(x).numpy()
    out_int = graph.evaluate(graph.quantize_input(x.numpy()))
    s = graph.output_scale
    assert np.abs(out_int * s - out_fq).max() <= s * (1 + 1e-9)
    assert np.array_equal(np.rint(out_fq / s).astype(np.int64), out_int)
    if not isinstance(ratio, str):
        for layer in graph.layers:
            counts = row_counts(layer.out_channels, ratio)
            assert Counter(layer.formats) == Counter({f: c for f, c in counts.items() if c})


def _build_chain(rng: np.random.Generator) -> tuple[nn.Sequential, tuple[int, ...]]:
    """A random Conv(+BN)+ReLU ... Flatten, Linear(+ReLU), Linear chain and its input shape."""
    c, h, w = int(rng.integers(1, 5)), int(rng.integers(4, 10)), int(rng.integers(4, 10))
    shape = (c, h, w)
    mods: list[nn.Module] = []
    for _ in range(int(rng.integers(0, 3))):
        cout, k = int(rng.integers(2, 12)), int(rng.choice([1, 3]))
        stride, pad = int(rng.integers(1, 3)), int(rng.integers(0, 2))
        oh, ow = (h + 2 * pad - k) // stride + 1, (w + 2 * pad - k) // stride + 1
        if oh < 1 or ow < 1:
            continue
        mods.append(
            nn.Conv2d(c, cout, k, stride=stride, padding=pad, bias=bool(rng.random() < 0.5))
        )
        if rng.random() < 0.6:
            mods.append(nn.BatchNorm2d(cout))
            randomize_bn(mods[-1], rng)
        if rng.random() < 0.8:  # otherwise a signed 8-bit output feeds the next layer
            mods.append(nn.ReLU())
        if rng.random() < 0.3:
            mods.append(nn.Dropout(0.5))
        c, h, w = cout, oh, ow
    mods.append(nn.Flatten())
    k_in = c * h * w
    if rng.random() < 0.5:
        hidden = int(rng.integers(3, 20))
        mods.append(nn.Linear(k_in, hidden))
        if rng.random() < 0.5:
            mods.append(nn.BatchNorm1d(hidden))
            randomize_bn(mods[-1], rng)
        mods.append(nn.ReLU())
        k_in = hidden
    mods.append(nn.Linear(k_in, int(rng.integers(2, 11))))
    return nn.Sequential(*mods), shape


def test_quantize_leaves_model_untouched_and_board_ratio():
    rng = np.random.default_rng(7)
    model, shape = _build_chain(rng)
    model.train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x = torch.from_numpy(rng.normal(size=(4, *shape))).float()
    qmodel = quantize(model, x, ratio=AccelConfig.for_board("tiny"))
    assert model.training
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k
    by_name = quantize(model, x, ratio="tiny")
    assert by_name.assignment == qmodel.assignment
    tiny = {"pot4": 3 / 8, "sp2-4": 2 / 8, "fixed4": 2 / 8, "fixed8": 1 / 8}
    assert qmodel.ratio == tiny
    for formats in qmodel.assignment.values():
        counts = row_counts(len(formats), tiny)
        assert Counter(formats) == Counter({f: c for f, c in counts.items() if c})


@pytest.mark.parametrize(
    ("model", "name"),
    [
        (nn.Sequential(nn.Conv2d(2, 4, 3), nn.ReLU(), nn.MaxPool2d(2, dilation=2)), "'2'"),
        (nn.Sequential(nn.Conv2d(2, 4, 3), nn.Conv2d(4, 4, 3, groups=2)), "'1'"),
        (nn.Sequential(nn.ReLU(), nn.Conv2d(2, 4, 3)), "'0'"),
        (nn.Sequential(nn.Conv2d(2, 4, 3, dilation=2)), "'0'"),
        (nn.Sequential(nn.Conv2d(2, 4, 3, padding="same")), "'0'"),
        (nn.Sequential(nn.Conv2d(2, 4, 3, padding=1, padding_mode="reflect")), "'0'"),
        (nn.Sequential(nn.Conv2d(2, 4, 3), nn.ReLU(), nn.BatchNorm2d(4)), "'2'"),
        (nn.Sequential(nn.Conv2d(2, 4, 3), nn.Sequential(nn.Sigmoid())), "'1.0'"),
        (nn.Sequential(nn.Flatten(), nn.Conv2d(2, 4, 3)), "'0'"),
        (nn.Sequential(nn.Conv2d(2, 4, 3), nn.ReLU(), nn.ReLU()), "'2'"),
        (nn.Sequential(nn.Conv2d(2, 4, 3), nn.Upsample(scale_factor=2)), "'1'"),
    ],
)
def test_unsupported_layers_are_named(model, name):
    with pytest.raises(UnsupportedLayerError) as e:
        quantize(model, torch.ones(1, 2, 6, 6))
    assert name in str(e.value)
    assert "host" in str(e.value)


def test_bad_inputs_have_clear_errors():
    model = nn.Sequential(nn.Conv2d(2, 4, 3), nn.ReLU(), nn.Linear(4, 2))
    with pytest.raises(ValueError, match="Flatten"):
        quantize(model, torch.ones(1, 2, 3, 3))
    with pytest.raises(ValueError, match="input channels|expects"):
        quantize(nn.Sequential(nn.Conv2d(3, 4, 3)), torch.ones(1, 2, 6, 6))
    with pytest.raises(ValueError, match="sum to 1"):
        quantize(nn.Sequential(nn.Linear(3, 4)), torch.ones(2, 3), ratio={"pot4": 0.5})
    with pytest.raises(ValueError, match="act_bits"):
        quantize(nn.Sequential(nn.Linear(3, 4)), torch.ones(2, 3), act_bits=8)
    qmodel = quantize(nn.Sequential(nn.Linear(3, 4)), torch.ones(2, 3))
    with pytest.raises(ValueError, match="per-sample shape"):
        qmodel(torch.ones(2, 5))


# ---- real model and data ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def resnet20():
    from rmsmp.quant.models.resnet_cifar import default_checkpoint, load_resnet20

    if not default_checkpoint().is_file():
        pytest.skip(f"shared ResNet-20 checkpoint not at {default_checkpoint()}")
    return load_resnet20()


@pytest.fixture(scope="module")
def cifar_test_500():
    from rmsmp.quant import data

    try:
        return data.cifar10_test(500, seed=0)
    except FileNotFoundError as e:
        pytest.skip(str(e))


def test_resnet20_fp32_accuracy_on_cifar10_jpeg(resnet20, cifar_test_500):
    x, y = cifar_test_500
    assert x.shape == (500, 3, 32, 32) and x.dtype == np.float32
    assert len(np.unique(y)) == 10  # a random subset, not the class-sorted head
    with torch.no_grad():
        pred = resnet20(torch.from_numpy(x)).argmax(1).numpy()
    assert (pred == y).mean() > 0.75


def test_resnet20_first_block_chain_exports_bit_exact(resnet20, cifar_test_500):
    x, _ = cifar_test_500
    block = resnet20.layer1[0]
    inner = nn.Sequential(
        OrderedDict(conv1=block.conv1, bn1=block.bn1, relu=nn.ReLU()),
    )
    chain = nn.Sequential(
        OrderedDict(
            conv1=resnet20.conv1,
            bn1=resnet20.bn1,
            relu=nn.ReLU(),
            layer1=nn.Sequential(OrderedDict([("0", inner)])),
        )
    )
    qmodel = quantize(chain, torch.from_numpy(x[:64]))
    assert list(qmodel.assignment) == ["conv1", "layer1.0.conv1"]
    graph = export(qmodel)
    xs = x[100:108]
    out_fq = qmodel(torch.from_numpy(xs)).numpy()
    out_int = graph.evaluate(graph.quantize_input(xs))
    s = graph.output_scale
    assert out_int.shape == (8, 16, 32, 32)
    assert np.abs(out_int * s - out_fq).max() <= s * (1 + 1e-9)
    assert np.array_equal(np.rint(out_fq / s).astype(np.int64), out_int)
    assert 0 < out_int.max() <= 15 and out_int.min() == 0
    with torch.no_grad():
        ref = chain(torch.from_numpy(xs)).double().numpy()
    assert np.corrcoef(ref.ravel(), out_fq.ravel())[0, 1] > 0.9


def test_missing_shared_data_names_the_place(tmp_path, monkeypatch):
    from rmsmp.quant import data
    from rmsmp.quant.models.resnet_cifar import load_resnet20

    monkeypatch.setenv("RMSMP_SHARED_DATA", str(tmp_path))
    with pytest.raises(FileNotFoundError, match="resnet20-12fca82f.th"):
        load_resnet20()
    with pytest.raises(FileNotFoundError, match="cifar10_jpeg.npz"):
        data.cifar10_test(10)


def test_signed_intermediate_layer_matches_integer_graph():
    torch.manual_seed(0)
    bn = nn.BatchNorm2d(6)
    randomize_bn(bn, np.random.default_rng(9))
    model = nn.Sequential(
        nn.Conv2d(3, 6, 3, padding=1),
        bn,
        nn.Conv2d(6, 5, 3, stride=2),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(5 * 3 * 3, 4),
    )
    x = torch.randn(6, 3, 7, 7)
    qmodel = quantize(model, x, ratio={"sp2-4": 0.5, "fixed8": 0.5}, act_bits=3)
    graph = export(qmodel)
    assert [(lay.lo, lay.hi) for lay in graph.layers] == [(-128, 127), (0, 7), (-128, 127)]
    out_int = graph.evaluate(graph.quantize_input(x.numpy()))
    s = graph.output_scale
    assert np.array_equal(np.rint(qmodel(x).numpy() / s).astype(np.int64), out_int)
