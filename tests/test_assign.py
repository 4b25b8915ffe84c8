"""Row-group rounding of format counts and RMSMP's sensitivity + variance row assignment."""

from __future__ import annotations

import itertools
from collections import Counter

import numpy as np
import pytest
import torch
from torch import nn

from rmsmp.arch import FORMATS
from rmsmp.quant.assign import (
    assign_rmsmp,
    compare_split_rules,
    relative_costs,
    row_counts,
    row_spread,
)

PAPER = {"pot4": 0.6, "fixed4": 0.35, "fixed8": 0.05}


def _random_ratio(rng: np.random.Generator) -> dict[str, float]:
    names = list(rng.permutation(sorted(FORMATS))[: rng.integers(1, len(FORMATS) + 1)])
    fr = rng.dirichlet(np.ones(len(names)))
    return {n: float(f) for n, f in zip(names, fr, strict=True)}


def _spread(w: np.ndarray) -> np.ndarray:
    """mean((w / max|w|)^2) per row, written out independently of the module."""
    return np.array([np.mean((row / np.max(np.abs(row))) ** 2) for row in w])


def _mixed_rows(rng: np.random.Generator, n: int, k: int) -> np.ndarray:
    """Rows from peaked (Laplace), Gaussian and flat (uniform) distributions, varied scales."""
    kinds = rng.integers(0, 3, size=n)
    rows = np.where(
        (kinds == 0)[:, None],
        rng.laplace(size=(n, k)),
        np.where((kinds == 1)[:, None], rng.normal(size=(n, k)), rng.uniform(-1, 1, (n, k))),
    )
    return rows * rng.uniform(0.01, 3.0, size=(n, 1))


# ---- row_counts with row groups -----------------------------------------------------------------


def test_row_counts_granularity_properties():
    rng = np.random.default_rng(0)
    for _ in range(2000):
        n, g = int(rng.integers(0, 600)), int(rng.integers(1, 33))
        ratio = _random_ratio(rng)
        counts = row_counts(n, ratio, granularity=g)
        assert list(counts) == list(ratio)
        assert sum(counts.values()) == n
        assert all(c >= 0 for c in counts.values())
        off_grid = [f for f, c in counts.items() if c % g != 0]
        assert len(off_grid) <= 1
        if n % g == 0:
            assert off_grid == []
        for f in off_grid:
            assert counts[f] % g == n % g
        for f, c in counts.items():
            assert abs(c - n * ratio[f]) < 2 * g
            if ratio[f] == 0:
                assert c == 0


def test_row_counts_granularity_examples():
    # 20 rows in groups of 8: 2 full groups share 1.2 / 0.7 / 0.1 -> pot4 1, then the leftover
    # group to fixed4 (remainder 0.7); the 4 rows left go to pot4, 4 short of its 12.
    assert row_counts(20, PAPER, granularity=8) == {"pot4": 12, "fixed4": 8, "fixed8": 0}
    # 100 rows in groups of 16: 6 groups share 3.6 / 2.1 / 0.3 -> 3, 2, 0 and one more to pot4
    # (64, 32, 0 rows); the 4 rows left go to fixed8, furthest below its share (5 vs 0).
    assert row_counts(100, PAPER, granularity=16) == {"pot4": 64, "fixed4": 32, "fixed8": 4}
    # fewer rows than one group: all go to the largest share
    assert row_counts(7, PAPER, granularity=8) == {"pot4": 7, "fixed4": 0, "fixed8": 0}
    # whole groups only: 3 groups share 1.8 / 1.05 / 0.15 -> 1, 1, 0, the leftover to pot4
    assert row_counts(48, PAPER, granularity=16) == {"pot4": 32, "fixed4": 16, "fixed8": 0}
    # granularity 1 is plain largest remainder
    assert (
        row_counts(16, PAPER, granularity=1)
        == row_counts(16, PAPER)
        == {
            "pot4": 10,
            "fixed4": 5,
            "fixed8": 1,
        }
    )


@pytest.mark.parametrize("g", [0, -4, 2.5, "8"])
def test_row_counts_rejects_bad_granularity(g):
    with pytest.raises(ValueError, match="granularity"):
        row_counts(10, PAPER, granularity=g)


# ---- assign_rmsmp -------------------------------------------------------------------------------


@pytest.mark.parametrize("rule", ["variance", "error"])
def test_assign_rmsmp_meets_counts(rule):
    rng = np.random.default_rng(1)
    for _ in range(25):
        n, k, g = int(rng.integers(1, 50)), int(rng.integers(2, 40)), int(rng.integers(1, 9))
        ratio = _random_ratio(rng)
        w = _mixed_rows(rng, n, k)
        sens = rng.normal(size=n) if rng.random() < 0.5 else None
        formats = assign_rmsmp(w, ratio, sens, split_rule=rule, granularity=g)
        assert len(formats) == n
        expected = {f: c for f, c in row_counts(n, ratio, granularity=g).items() if c > 0}
        assert Counter(formats) == expected


def test_assign_rmsmp_most_sensitive_rows_get_fixed8():
    rng = np.random.default_rng(2)
    n = 40
    w = _mixed_rows(rng, n, 30)
    sens = rng.permutation(n).astype(float)  # distinct
    ratio = {"pot4": 0.5, "fixed4": 0.3, "fixed8": 0.2}
    for rule in ("variance", "error"):
        formats = assign_rmsmp(w, ratio, sens, split_rule=rule)
        wide = {r for r, f in enumerate(formats) if f == "fixed8"}
        assert wide == {r for r in range(n) if sens[r] >= n - 8}


def _rows_on_grid(rng: np.random.Generator, name: str, n: int, k: int) -> np.ndarray:
    """Rows exactly representable in a format (scaled levels, extreme level present)."""
    levels = FORMATS[name].levels()
    rows = rng.choice(levels, size=(n, k)).astype(np.float64)
    rows[:, 0] = levels.max()
    return rows * rng.uniform(0.1, 2.0, size=(n, 1))


def test_assign_rmsmp_without_sensitivity_gives_fixed8_to_rows_4_bits_cannot_hold():
    rng = np.random.default_rng(3)
    w = np.concatenate(
        [
            _rows_on_grid(rng, "pot4", 10, 64),
            _rows_on_grid(rng, "fixed4", 8, 64),
            rng.normal(size=(2, 64)),  # the only rows with 4-bit error under both formats
        ]
    )
    perm = rng.permutation(20)
    formats = assign_rmsmp(w[perm], {"pot4": 0.5, "fixed4": 0.4, "fixed8": 0.1})
    by_origin = {int(p): f for p, f in zip(perm, formats, strict=True)}
    assert {r for r, f in by_origin.items() if f == "fixed8"} == {18, 19}


def test_variance_rule_is_a_threshold_on_normalised_variance():
    rng = np.random.default_rng(4)
    for _ in range(10):
        n = int(rng.integers(10, 60))
        w = _mixed_rows(rng, n, 48)
        ratio = {"pot4": 0.45, "sp2-4": 0.2, "fixed4": 0.3, "fixed8": 0.05}
        formats = np.array(assign_rmsmp(w, ratio, rng.normal(size=n), split_rule="variance"))
        s = _spread(w)
        groups = [s[formats == f] for f in ("pot4", "sp2-4", "fixed4")]
        for lower, upper in itertools.pairwise(groups):
            if lower.size and upper.size:
                assert lower.max() <= upper.min()
    np.testing.assert_allclose(row_spread(w), _spread(w), rtol=1e-12)


def test_variance_rule_sends_peaked_rows_to_pot_and_flat_rows_to_fixed():
    rng = np.random.default_rng(5)
    peaked = rng.laplace(size=(12, 256)) * rng.uniform(0.1, 2, (12, 1))
    flat = rng.uniform(-1, 1, size=(8, 256)) * rng.uniform(0.1, 2, (8, 1))
    perm = rng.permutation(20)
    w = np.concatenate([peaked, flat])[perm]
    formats = assign_rmsmp(w, {"pot4": 0.6, "fixed4": 0.4}, split_rule="variance")
    by_origin = {int(p): f for p, f in zip(perm, formats, strict=True)}
    assert [by_origin[i] for i in range(12)] == ["pot4"] * 12
    assert [by_origin[i] for i in range(12, 20)] == ["fixed4"] * 8


def _total(w: np.ndarray, formats: list[str]) -> float:
    names = sorted(set(formats))
    cost = relative_costs(w, names)
    return float(sum(cost[r, names.index(f)] for r, f in enumerate(formats)))


def test_error_rule_is_optimal_and_never_worse_than_variance_rule():
    rng = np.random.default_rng(6)
    ratio = {"pot4": 0.5, "fixed4": 0.5}
    for _ in range(5):  # brute force over every split of 10 rows into 5 + 5
        w = _mixed_rows(rng, 10, 32)
        formats = assign_rmsmp(w, ratio, split_rule="error")
        cost = relative_costs(w, ["pot4", "fixed4"])
        best = min(
            cost[list(pot), 0].sum() + np.delete(cost[:, 1], list(pot)).sum()
            for pot in itertools.combinations(range(10), 5)
        )
        assert _total(w, formats) == pytest.approx(best, rel=1e-12)
    for _ in range(10):
        n = int(rng.integers(5, 60))
        w = _mixed_rows(rng, n, int(rng.integers(8, 100)))
        sens = rng.normal(size=n)
        err = assign_rmsmp(w, PAPER, sens, split_rule="error")
        var = assign_rmsmp(w, PAPER, sens, split_rule="variance")
        assert [f == "fixed8" for f in err] == [f == "fixed8" for f in var]
        assert _total(w, err) <= _total(w, var) * (1 + 1e-12)


def test_assign_rmsmp_rejects_bad_arguments():
    w = np.ones((4, 3))
    with pytest.raises(ValueError, match="split_rule"):
        assign_rmsmp(w, PAPER, split_rule="kl")
    with pytest.raises(ValueError, match="sensitivity"):
        assign_rmsmp(w, PAPER, sensitivity=np.ones(3))
    with pytest.raises(ValueError, match="sensitivity"):
        assign_rmsmp(w, PAPER, sensitivity=np.array([1.0, np.nan, 0.0, 2.0]))


# ---- compare_split_rules ------------------------------------------------------------------------


def test_compare_split_rules_on_a_model():
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 16, 3), nn.ReLU(), nn.Conv2d(16, 24, 3), nn.Flatten(), nn.Linear(24, 10)
    )
    res = compare_split_rules(model, PAPER)
    assert set(res["layers"]) == {"0", "2", "4"}
    assert res["n_rows"] == 50
    assert [res["layers"][k]["n_rows"] for k in ("0", "2", "4")] == [16, 24, 10]
    for rule in ("variance", "error"):
        assert res[rule] == pytest.approx(sum(e[rule] for e in res["layers"].values()))
    for entry in res["layers"].values():
        assert 0 < entry["error"] <= entry["variance"] * (1 + 1e-12)
    conv2 = model[2].weight.detach().double().reshape(24, -1).numpy()
    assert res["layers"]["2"]["variance"] == pytest.approx(
        _total(conv2, assign_rmsmp(conv2, PAPER, split_rule="variance")), rel=1e-12
    )
    with pytest.raises(ValueError, match="no entry for layer"):
        compare_split_rules(model, PAPER, sensitivity={"0": np.zeros(16)})
