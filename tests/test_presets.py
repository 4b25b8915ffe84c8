"""The device-filling presets and their Fixed-4 baselines against the calibrated resource model."""

from __future__ import annotations

import benchpath  # noqa: F401  (benchmarks/ on sys.path)
import pytest
from presets import FILL

from rmsmp.arch import PRESETS
from rmsmp.boards import resources
from rmsmp.boards.devices import board
from rmsmp.quant.quantize import resolve_ratio

FILLING = {
    "pynq-z1": "pynq-z1-fixed4-dsp",
    "zc706": "zc706-fixed4-dsp",
    "pynq-z1-fixed4-fill": "pynq-z1-fixed4-dsp",
    "zc706-fixed4-fill": "zc706-fixed4-dsp",
}
"""Each device-filling preset and the smaller design it must outgrow."""


@pytest.mark.parametrize("name", ["pynq-z1-fixed4-dsp", "zc706-fixed4-dsp", *FILLING])
def test_sized_presets_fit_their_budget(name: str) -> None:
    """Each fits within 85% of its part's LUTs and DSPs and within its BRAM; the filling ones
    use at least 70% of both (they fill the device), the Fixed-4 DSP ones at least 70% of the
    DSPs."""
    cfg = PRESETS[name]
    b = board(name.split("-fi")[0])
    est = resources.estimate(cfg)
    lut, dsp = est.lut / b.luts, est.dsp / b.dsps
    assert lut <= FILL and dsp <= FILL and est.bram36 <= b.bram36
    assert dsp >= 0.70
    if name in FILLING:
        assert lut >= 0.70
        assert cfg.peak_macs_per_cycle > PRESETS[FILLING[name]].peak_macs_per_cycle


@pytest.mark.parametrize("name", ["pynq-z1-fixed4-fill", "zc706-fixed4-fill"])
def test_fixed4_fill_is_fixed4_rows_on_dsps_and_luts(name: str) -> None:
    """Both implementations are there, and the quantizer sees every row as Fixed-4."""
    cfg = PRESETS[name]
    (group,) = cfg.groups
    assert group.fmt == "fixed4" and 0 < group.lut_rows < group.rows
    assert resolve_ratio(cfg) == resolve_ratio(name) == {"fixed4": 1.0}
