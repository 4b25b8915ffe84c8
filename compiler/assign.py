"""Row-wise format assignment: which weight format (PE row group) each output row uses.

The accelerator has a fixed number of PE rows per format, so a layer's rows must be split in that
ratio. Within the ratio, rows are placed where they lose least: every row is scored under every
format (relative MSE at its best per-row scale), then an optimal assignment is solved.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.optimize import linear_sum_assignment

from ..arch.numerics import FORMATS, WeightFormat

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


def row_counts(n_rows: int, ratio: dict[str, float]) -> dict[str, int]:
    """Rows per format summing exactly to ``n_rows``, by largest-remainder rounding.

    Each format gets floor(n * fraction); the leftover rows go to the largest fractional parts,
    ties broken by the order of ``ratio``.
    """
    ratio = check_ratio(ratio)
    if not isinstance(n_rows, int | np.integer) or n_rows < 0:
        raise ValueError(f"n_rows must be an int >= 0, got {n_rows!r}")
    total = sum(ratio.values())
    exact = {k: n_rows * v / total for k, v in ratio.items()}
    counts = {k: math.floor(e) for k, e in exact.items()}
    order = sorted(ratio, key=lambda k: -(exact[k] - counts[k]))
    for i in range(n_rows - sum(counts.values())):
        counts[order[i % len(order)]] += 1
    return counts


def _nearest(v: np.ndarray, fmt: WeightFormat) -> np.ndarray:
    """Nearest level (as float) of each value; exact midpoints go toward zero."""
    pos = fmt.levels()[fmt.levels() >= 0].astype(np.float64)
    mid = (pos[1:] + pos[:-1]) / 2
    return np.sign(v) * pos[np.searchsorted(mid, np.abs(v))]


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


def assign_rows(w_rows: np.ndarray, ratio: dict[str, float]) -> list[str]:
    """The format of each row, meeting ``row_counts`` exactly and minimising total relative MSE.

    Relative (not absolute) error so that every row counts alike whatever its magnitude: the few
    8-bit rows go where 4-bit quantisation hurts most, PoT rows where its log grid fits. Solved
    exactly as a rows x slots assignment (each format's column repeated count times).
    """
    w = _as_rows(w_rows)
    counts = row_counts(len(w), ratio)
    names = [f for f, c in counts.items() if c > 0]
    if not names:
        return []
    cost = relative_costs(w, names)
    slot_fmt = np.repeat(np.arange(len(names)), [counts[f] for f in names])
    rows, cols = linear_sum_assignment(cost[:, slot_fmt])
    out = [""] * len(w)
    for r, c in zip(rows, cols, strict=True):
        out[r] = names[slot_fmt[c]]
    return out
