"""The device-filling presets and their Fixed-4 baselines against the calibrated resource model."""

from __future__ import annotations

import pytest

from rmsmp.arch import PRESETS
from rmsmp.boards import resources
from rmsmp.boards.devices import board

FILL = 0.85
"""The budget benchmarks/presets.py sizes them to (fraction of LUT and of DSP48E1)."""


@pytest.mark.parametrize(
    "name", ["pynq-z1-fill", "pynq-z1-fixed4-dsp", "zc706-fill", "zc706-fixed4-dsp"]
)
def test_sized_presets_fit_their_budget(name: str) -> None:
    """Each fits within 85% of its part's LUTs and DSPs and within its BRAM; the mixed ones use
    at least 70% of both (they fill the device), the Fixed-4 ones at least 70% of the DSPs."""
    cfg = PRESETS[name]
    b = board(name.split("-fi")[0])
    est = resources.estimate(cfg)
    lut, dsp = est.lut / b.luts, est.dsp / b.dsps
    assert lut <= FILL and dsp <= FILL and est.bram36 <= b.bram36
    assert dsp >= 0.70
    if name.endswith("-fill"):
        assert lut >= 0.70
        assert cfg.peak_macs_per_cycle > PRESETS[name.removesuffix("-fill")].peak_macs_per_cycle
