"""Row-wise format assignment: which weight format (PE row group) each output row uses.

The accelerator has a fixed number of PE rows per format, so a layer's rows must be split in that
ratio. Within the ratio, rows are placed where they lose least: every row is scored under every
format (relative MSE at its best per-row scale), then an optimal assignment is solved
(``assign_rows``). ``assign_rmsmp`` is the paper's rule instead: 8 bits for the most sensitive
rows (e.g. by Hessian, ``sensitivity``), then PoT for the rows of smallest normalised variance.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.optimize import linear_sum_assignment
from torch import nn

from ..arch.numerics import FORMATS, WeightFormat
from .sensitivity import weight_layers

CLIP_RATIOS = np.linspace(1.0, 0.2, 40)
"""Clip ratios searched by ``best_scale``, largest first so ties keep the least clipping."""


def check_ratio(ratio: dict[str, float]) -> dict[str, float]:
    """Validate a {format name: fraction of rows} mapping; returns it as plain floats."""
    if not isinstance(ratio, dict) or not ratio:
        raise ValueError(
            f"ratio must be a non-empty dict of format name -> fraction, got {ratio!r}"
        )
    out = {}
    for name, v in ratio.items():
        if name not in FORMATS:
            raise ValueError(f"ratio names unknown format {name!r}; known: {sorted(FORMATS)}")
        v = float(v)
        if not (math.isfinite(v) and v >= 0):
            raise ValueError(f"ratio[{name!r}] must be a finite fraction >= 0, got {v}")
        out[name] = v
    total = sum(out.values())
    if abs(total - 1.0) > 1e-6:
        raise ValueError(f"ratio fractions must sum to 1, got {total:.9g} for {out}; rescale them")
    return out


def row_counts(n_rows: int, ratio: dict[str, float], granularity: int = 1) -> dict[str, int]:
    """Rows per format summing exactly to ``n_rows``, in whole hardware row groups where possible.

    The ``n_rows // granularity`` full groups are shared by largest remainder: each format gets
    floor(groups * fraction) groups, and the leftover groups go to the largest fractional parts,
    ties broken by the order of ``ratio``. The ``n_rows % granularity`` rows of the last, partial
    group all go to one format: the one furthest below its exact share ``n_rows * fraction``
    (ties: order of ``ratio``). So every count is a multiple of ``granularity`` except at most
    that one, which is congruent to ``n_rows`` modulo ``granularity``. ``granularity=1`` is plain
    largest-remainder rounding of rows.
    """
    ratio = check_ratio(ratio)
    if not isinstance(n_rows, int | np.integer) or n_rows < 0:
        raise ValueError(f"n_rows must be an int >= 0, got {n_rows!r}")
    if not isinstance(granularity, int | np.integer) or granularity < 1:
        raise ValueError(f"granularity must be an int >= 1 (rows per group), got {granularity!r}")
    total = sum(ratio.values())
    groups, partial = divmod(int(n_rows), int(granularity))
    exact = {k: groups * v / total for k, v in ratio.items()}
    units = {k: math.floor(e) for k, e in exact.items()}
    order = sorted(ratio, key=lambda k: -(exact[k] - units[k]))
    for i in range(groups - sum(units.values())):
        units[order[i % len(order)]] += 1
    counts = {k: u * granularity for k, u in units.items()}
    if partial:
        short = max(ratio, key=lambda k: n_rows * ratio[k] / total - counts[k])
        counts[short] += partial
    return counts


def _nearest(v: np.ndarray, fmt: WeightFormat) -> np.ndarray:
    """Nearest level (as float) of each value; exact midpoints go toward zero."""
    pos = fmt.levels()[fmt.levels() >= 0].astype(np.float64)
    a = np.abs(v)
    if len(pos) == pos[-1] + 1:  # uniform 0, 1, ..., max: round half toward zero, elementwise
        return np.sign(v) * np.minimum(np.ceil(a - 0.5), pos[-1])
    mid = (pos[1:] + pos[:-1]) / 2
    return np.sign(v) * pos[np.searchsorted(mid, a)]


def nearest_level(v: np.ndarray, fmt: WeightFormat) -> np.ndarray:
    """Nearest integer level of ``fmt`` to each value (int64); midpoints round toward zero."""
    return _nearest(np.asarray(v, dtype=np.float64), fmt).astype(np.int64)


def _as_rows(w_rows: np.ndarray) -> np.ndarray:
    w = np.asarray(w_rows, dtype=np.float64)
    if w.ndim != 2 or w.shape[1] == 0:
        raise ValueError(f"weight rows must be a 2-D [rows, K] array with K >= 1, got {w.shape}")
    if not np.isfinite(w).all():
        raise ValueError("weight rows contain NaN or inf; fix the model's weights first")
    return w


def best_scale(w_rows: np.ndarray, fmt: WeightFormat) -> tuple[np.ndarray, np.ndarray]:
    """Per-row scale alpha minimising MSE(alpha * nearest_level(w / alpha), w), and that MSE.

    Searches clip ratios in [0.2, 1] of max|w_row| / max_level: clipping a few large weights often
    buys a finer grid for the rest. All-zero rows get alpha = 1, err = 0.
    """
    w = _as_rows(w_rows)
    amax = np.abs(w).max(axis=1)
    base = np.where(amax > 0, amax / fmt.max_level, 1.0)
    best_alpha = base.copy()
    best_err = np.full(len(w), np.inf)
    for c in CLIP_RATIOS:
        alpha = c * base
        q = _nearest(w / alpha[:, None], fmt)
        err = np.mean((alpha[:, None] * q - w) ** 2, axis=1)
        better = err < best_err
        best_alpha[better], best_err[better] = alpha[better], err[better]
    zero = amax == 0
    best_alpha[zero], best_err[zero] = 1.0, 0.0
    return best_alpha, best_err


def relative_costs(w_rows: np.ndarray, formats: list[str]) -> np.ndarray:
    """cost[r, f] = best-scale MSE of row r under format f, over mean(w_r^2) (0 for zero rows)."""
    w = _as_rows(w_rows)
    power = np.mean(w**2, axis=1)
    safe = np.where(power > 0, power, 1.0)
    return np.stack([best_scale(w, FORMATS[f])[1] / safe for f in formats], axis=1)


def _solve(cost: np.ndarray, names: list[str], counts: dict[str, int]) -> list[str]:
    """Optimal rows -> formats for a [rows, len(names)] cost, each format used counts[f] times.

    Solved exactly as a rows x slots assignment (each format's column repeated count times).
    """
    slot_fmt = np.repeat(np.arange(len(names)), [counts[f] for f in names])
    rows, cols = linear_sum_assignment(cost[:, slot_fmt])
    out = [""] * len(cost)
    for r, c in zip(rows, cols, strict=True):
        out[r] = names[slot_fmt[c]]
    return out


def assign_rows(w_rows: np.ndarray, ratio: dict[str, float]) -> list[str]:
    """The format of each row, meeting ``row_counts`` exactly and minimising total relative MSE.

    Relative (not absolute) error so that every row counts alike whatever its magnitude: the few
    8-bit rows go where 4-bit quantisation hurts most, PoT rows where its log grid fits.
    """
    return assign_tied([w_rows], ratio)


def assign_tied(layers: list[np.ndarray], ratio: dict[str, float]) -> list[str]:
    """One format per row shared by several layers' rows (row r of every layer gets format r),
    meeting ``row_counts`` exactly and minimising the relative MSE summed over the layers: the
    layers joined by identity shortcuts, whose channels then need no reordering between them."""
    ws = [_as_rows(w) for w in layers]
    names = [f for f, c in row_counts(len(ws[0]), ratio).items() if c > 0]
    if len(names) < 2:  # nothing to choose
        return names * len(ws[0])
    return assign_costed(sum(relative_costs(w, names) for w in ws), names, ratio)


def assign_costed(cost: np.ndarray, formats: list[str], ratio: dict[str, float]) -> list[str]:
    """``assign_rows`` from the rows' ``relative_costs`` under ``formats`` (every format of
    ``ratio`` among them), so that a sweep over many ratios scores each row once."""
    counts = row_counts(len(cost), ratio)
    names = [f for f, c in counts.items() if c > 0]
    if len(names) < 2:
        return names * len(cost)
    return _solve(cost[:, [formats.index(f) for f in names]], names, counts)


WIDE = "fixed8"
"""RMSMP's 8-bit format: its rows go to the most sensitive rows."""

SPREAD_ORDER = ("pot4", "sp2-4", "fixed4")
"""4-bit formats from the grid most concentrated near zero (PoT) to the uniform one (Fixed)."""

SPLIT_RULES = ("variance", "error")
"""How ``assign_rmsmp`` splits the 4-bit rows between the shift-add and fixed formats."""


def row_spread(w_rows: np.ndarray) -> np.ndarray:
    """mean((w / max|w|)^2) per row: the variance about zero of the max-normalised row (0 if zero).

    Normalised by max|w| because the per-row scale is set by the extremes, so this says where
    the bulk of the row sits on a grid spanning [-1, 1]: small = concentrated near zero (peaked,
    Gaussian- or Laplace-like) where PoT's log grid is dense; large = spread out to the extremes
    where the uniform Fixed grid fits. Taken about zero, not about the row's mean, because every
    grid is centred on zero: a row bunched far from zero needs the uniform grid.
    """
    w = _as_rows(w_rows)
    amax = np.abs(w).max(axis=1)
    return np.mean((w / np.where(amax > 0, amax, 1.0)[:, None]) ** 2, axis=1)


def assign_rmsmp(
    w_rows: np.ndarray,
    ratio: dict[str, float],
    sensitivity: np.ndarray | None = None,
    split_rule: str = "variance",
    granularity: int = 1,
) -> list[str]:
    """RMSMP's assignment: fixed8 for the most sensitive rows, then a 4-bit split by ``split_rule``.

    Counts follow ``row_counts(n, ratio, granularity)`` exactly. The fixed8 rows are the ones with
    the highest ``sensitivity`` (e.g. a per-row Hessian trace or eigenvalue; ties go to the lower
    row index); without one, the rows whose best 4-bit relative MSE is highest. The other rows
    are split among the ratio's 4-bit formats:

    * ``"variance"`` (the paper's rule): rows sorted by ``row_spread``, the smallest going to
      pot4, then sp2-4, then fixed4 (``SPREAD_ORDER``): a threshold on the normalised variance.
    * ``"error"``: the assignment minimising their total relative MSE (as ``assign_rows``).
    """
    w = _as_rows(w_rows)
    if split_rule not in SPLIT_RULES:
        raise ValueError(f"split_rule must be one of {SPLIT_RULES}, got {split_rule!r}")
    n = len(w)
    counts = row_counts(n, ratio, granularity)
    narrow = [f for f in SPREAD_ORDER if counts.get(f, 0) > 0]
    if sensitivity is None:
        sens = relative_costs(w, narrow).min(axis=1) if narrow else np.zeros(n)
    else:
        sens = np.asarray(sensitivity, dtype=np.float64)
        if sens.shape != (n,) or not np.isfinite(sens).all():
            raise ValueError(
                f"sensitivity must be {n} finite values, one per row, got shape {sens.shape}; "
                "pass the layer's per-row sensitivity (e.g. from rmsmp.quant.sensitivity)"
            )
    order = np.argsort(-sens, kind="stable")
    n_wide = counts.get(WIDE, 0)
    out = np.full(n, WIDE, dtype=object)
    rest = np.sort(order[n_wide:])
    if rest.size and split_rule == "variance":
        ranked = rest[np.argsort(row_spread(w[rest]), kind="stable")]
        bounds = np.cumsum([0] + [counts[f] for f in narrow])
        for f, a, b in zip(narrow, bounds[:-1], bounds[1:], strict=True):
            out[ranked[a:b]] = f
    elif rest.size:
        out[rest] = _solve(relative_costs(w[rest], narrow), narrow, counts)
    return out.tolist()


def compare_split_rules(
    model: nn.Module,
    ratio: dict[str, float],
    sensitivity: dict[str, np.ndarray] | None = None,
    granularity: int = 1,
) -> dict:
    """Total relative weight-quantisation MSE of ``assign_rmsmp``'s split rules over a model.

    Every Conv2d/Linear weight (rows = output channels) is assigned under each rule with the same
    fixed8 rows (``sensitivity[layer name]``, or the error fallback), and each row's relative MSE
    at its best scale is summed. Raw weights suffice: relative MSE and ``row_spread`` are
    invariant to the per-row scaling that folding BatchNorm applies. Returns ``{"variance": total,
    "error": total, "n_rows": rows, "layers": {name: {"variance", "error", "n_rows"}}}``.
    """
    names = list(check_ratio(ratio))
    layers = {}
    for name, module in weight_layers(model):
        w = module.weight.detach().double().reshape(module.weight.shape[0], -1).numpy()
        if sensitivity is not None and name not in sensitivity:
            raise ValueError(f"sensitivity has no entry for layer {name!r}; give one per layer")
        sens = None if sensitivity is None else np.asarray(sensitivity[name])
        cost = relative_costs(w, names)
        entry: dict[str, float | int] = {"n_rows": len(w)}
        for rule in SPLIT_RULES:
            fmts = assign_rmsmp(w, ratio, sens, rule, granularity)
            entry[rule] = float(sum(cost[r, names.index(f)] for r, f in enumerate(fmts)))
        layers[name] = entry
    if not layers:
        raise ValueError("the model has no Conv2d/Linear layer to compare split rules on")
    totals = {rule: sum(e[rule] for e in layers.values()) for rule in SPLIT_RULES}
    return {**totals, "n_rows": sum(e["n_rows"] for e in layers.values()), "layers": layers}
