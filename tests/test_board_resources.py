"""The resource model (``rmsmp.boards.resources``) and the board budget check built on it."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import pytest

from rmsmp.arch import PRESETS, AccelConfig, RowGroup
from rmsmp.arch.layout import PeUnit, pe_units
from rmsmp.boards import BOARDS, BoardError, board
from rmsmp.boards import resources as model

RESULTS = Path(__file__).resolve().parents[1] / "benchmarks" / "results" / "pe_resources.json"
COUNTS = RESULTS.with_name("resources_presets.json")
BRAM_PCT = 2.0
"""How far the model's block RAM may be from a preset's Yosys count."""
CROSSCHECK_PCT = {"lut": 10.0, "ff": 15.0, "dsp": 2.0, "bram36": 10.0}
"""How far the model may be from a preset's Yosys count (benchmarks/results)."""


def _with_groups(base: str, *groups: RowGroup, name: str) -> AccelConfig:
    cols = sum(g.rows for g in groups)
    cfg = AccelConfig.preset(base)
    lanes = math.gcd(cfg.requant_lanes, cols)  # requant lanes must divide the rows
    return dataclasses.replace(cfg, name=name, groups=groups, cols=cols, requant_lanes=lanes)


@pytest.mark.parametrize("name", sorted(BOARDS))
def test_every_board_preset_fits_its_board(name: str) -> None:
    b = board(name)
    b.check(b.config)
    est = model.estimate(b.config)
    assert 0 < est.lut < b.luts and 0 < est.dsp <= b.dsps and 0 < est.bram36 <= b.bram36


def test_parts_add_up_and_pairs_halve_fixed4_dsps() -> None:
    cfg = AccelConfig.preset("pynq-z1")
    est = model.estimate(cfg)
    for r in model.RESOURCES:
        assert getattr(est, r) == pytest.approx(sum(p[r] for p in est.parts.values()))
    kinds = {model.unit_kind(*u): u.rows for u in pe_units(cfg)}
    pair, single = model.unit_kind("fixed4", 2), model.unit_kind("fixed4", 1)
    assert kinds[pair] == 2 and kinds[single] == 1
    pairs = pe_units(cfg).count(PeUnit("fixed4", 2))
    assert est.parts[pair]["dsp"] == pytest.approx(pairs * est.parts[single]["dsp"], rel=0.05)


def test_too_many_shift_rows_names_luts_and_the_overshoot() -> None:
    cfg = _with_groups("pynq-z1", RowGroup("pot4", 30), RowGroup("fixed4", 2), name="wide")
    b = board("pynq-z1")
    need = model.estimate(cfg).lut
    assert need > b.luts
    with pytest.raises(BoardError) as err:
        b.check(cfg)
    msg = str(err.value)
    assert f"config wide needs {need:,.0f} LUT, {need - b.luts:,.0f} more than " in msg
    assert "xc7z020's 53,200; use fewer pot4 rows" in msg


def test_too_many_lut_multiplier_rows_names_lut_rows() -> None:
    cfg = _with_groups("pynq-z1", RowGroup("fixed4", 28, lut_rows=24), name="lutmul")
    with pytest.raises(
        BoardError, match=r"LUT, .* more than xc7z020's 53,200; use fewer fixed4 lut_rows"
    ):
        board("pynq-z1").check(cfg)
    board("zc706").check(cfg)


def test_too_many_fixed8_rows_names_dsps() -> None:
    cfg = _with_groups("pynq-z1", RowGroup("fixed8", 12), RowGroup("pot4", 8), name="dsp")
    with pytest.raises(BoardError, match=r"DSP48E1, .* more than xc7z020's 220; use fewer fixed8"):
        board("pynq-z1").check(cfg)
    board("zc706").check(cfg)


def test_model_against_the_preset_count() -> None:
    """The model's estimate of a preset lands near that preset's Yosys count
    (``pe_resources.py --estimates``: the whole design's, or its modules' composed)."""
    check = json.loads(RESULTS.read_text())["crosscheck"]
    assert check["config_hash"] == PRESETS[check["board"]].hash
    for r, pct in CROSSCHECK_PCT.items():
        est, count = check["model"][r], check["count"][r]
        assert abs(est - count) <= pct / 100 * count, (r, est, count)


def test_block_ram_model_against_every_preset_count() -> None:
    """The buffers' block RAM mapping (``memory_bram36``) on each counted preset's buffer shapes
    lands within BRAM_PCT of its Yosys BRAM36 count (benchmarks/resources_presets.py)."""
    rows = [r for r in json.loads(COUNTS.read_text())["presets"] if "buffers" in r]
    assert len(rows) >= 4
    for r in rows:
        est = sum(model.memory_bram36(bits, depth) for bits, depth in r["buffers"].values())
        count = r["yosys"]["bram36"]
        assert abs(est - count) <= BRAM_PCT / 100 * count, (r["preset"], est, count)


def test_shallow_buffers_are_distributed_ram_and_deep_ones_the_cheapest_tiling() -> None:
    depth = model.load()["memory"]["lutram_max_depth"]
    assert model.memory_bram36(7200, depth) == 0.0
    assert model.memory_bram36(36, 2 * depth) == 0.5  # one RAMB18E1, 36 x 512
    assert model.memory_bram36(73, 512) == 1.5  # three 36-bit RAMB18E1, not two 72-bit RAMB36E1
    assert model.memory_bram36(36, 1024) == 1.0
    assert model.memory_bram36(480, 8192) == 108.0  # 54 x 9-bit columns, 2 x 4K deep
