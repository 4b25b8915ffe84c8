"""Where row formats allow it, an identity shortcut needs no copy pass: a conv whose rows have
the formats of its shortcut's producer places every channel in the producer's slot and reads
the shortcut where it lies; any other format on a row costs the copy pass."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from graphgen import random_layer

from rmsmp.arch import AccelConfig, numerics
from rmsmp.compiler.ir import IntGraph
from rmsmp.compiler.lower import lower
from rmsmp.host.runtime import run_with_stats


def _block(seed: int, cfg: AccelConfig, same_formats: bool) -> tuple[IntGraph, np.ndarray]:
    """conv a (4 -> n), conv b (n -> n), conv c (n -> n) + a's output as identity shortcut,
    after a first conv (4 -> 4) that the lowering may place by its own rule."""
    rng = np.random.default_rng(seed)
    n, shape = int(rng.integers(4, 12)), (4, 7, 6)
    x = rng.integers(-128, 128, size=(2, *shape))
    first = random_layer(rng, cfg, "first", "conv", shape, 4, x, padding=1)
    y = first.evaluate(x)
    a = random_layer(rng, cfg, "a", "conv", shape, n, y, padding=1)
    ya = a.evaluate(y)
    b = random_layer(rng, cfg, "b", "conv", ya.shape[1:], n, ya, padding=1)
    c = random_layer(rng, cfg, "c", "conv", ya.shape[1:], n, b.evaluate(ya), padding=1)
    fmts = list(a.formats)
    if not same_formats:
        other = next(g.fmt for g in cfg.groups if g.fmt != fmts[0])
        fmts[0] = other
    levels = [rng.choice(numerics.weight_format(f).levels(), size=(n, 3, 3)) for f in fmts]
    c = dataclasses.replace(
        c, weight=np.stack(levels), formats=fmts, res_from=1, res_mult=c.mult.copy()
    )
    return IntGraph([first, a, b, c], shape, 0.05), x


@pytest.mark.parametrize("seed", range(4))
def test_identity_shortcut_is_copy_free_where_formats_agree(seed: int) -> None:
    cfg = AccelConfig.for_board("pynq-z1" if seed % 2 else "tiny")
    for same in (True, False):
        graph, x = _block(seed, cfg, same)
        prog = lower(graph, cfg, len(x))
        copies = [r.name for r in prog.layers if r.op == "copy"]
        assert copies == ([] if same else ["c.shortcut"])
        assert prog.layers[-1].res == ("fm2" if same else "fm4.res")
        assert np.array_equal(run_with_stats(prog, x).output, graph.evaluate(x))
