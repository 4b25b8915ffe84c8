"""Boards as data: each board's part, PS7 and default config, and the checks on them."""

from __future__ import annotations

import dataclasses

import pytest

from rmsmp.arch import AccelConfig, ConfigError
from rmsmp.boards import BOARDS, PS7, BoardError, board


def test_the_three_boards() -> None:
    assert sorted(BOARDS) == ["pynq-z1", "pynq-z2", "zc706"]
    assert board("pynq-z1").part == board("pynq-z2").part == "xc7z020clg400-1"
    assert board("zc706").part == "xc7z045ffg900-2"
    assert [board(n).speed_grade for n in ("pynq-z1", "zc706")] == [1, 2]
    assert board("zc706").ps7.ddr_bus_bits == 32 and board("pynq-z1").ps7.ddr_bus_bits == 16


def test_default_configs_come_from_arch_presets() -> None:
    """pynq-z2 uses the XC7Z020 preset under its own name: same hash, so one Program and one
    bitstream configuration serve both PYNQ boards."""
    z1, z2, zc = (board(n).config for n in ("pynq-z1", "pynq-z2", "zc706"))
    assert z1.hash == z2.hash == AccelConfig.preset("pynq-z1").hash
    assert (z1.name, z2.name) == ("pynq-z1", "pynq-z2")
    assert zc == AccelConfig.preset("zc706")
    assert AccelConfig.for_board("tiny") is AccelConfig.preset("tiny")


def test_unknown_names_say_where_to_look() -> None:
    with pytest.raises(BoardError, match="unknown board 'zedboard'; known: pynq-z1, pynq-z2"):
        board("zedboard")
    with pytest.raises(ConfigError, match=r"boards.target_config\(name\)"):
        AccelConfig.for_board("pynq-z2")
    with pytest.raises(ConfigError, match="unknown preset 'x'"):
        AccelConfig.preset("x")


def test_board_data_is_checked_when_built() -> None:
    z1 = board("pynq-z1")
    with pytest.raises(BoardError, match="not a Zynq-7000"):
        dataclasses.replace(z1, part="xc7a35tcsg324-1")
    with pytest.raises(BoardError, match="GP0 window"):
        dataclasses.replace(z1, csr_base=0x8000_0000)
    with pytest.raises(BoardError, match="power of two"):
        dataclasses.replace(z1, csr_range=0x3000)
    with pytest.raises(ConfigError, match="unknown preset"):
        dataclasses.replace(z1, preset="nope")
    with pytest.raises(BoardError, match="16 or 32"):
        PS7(crystal_mhz=50, ddr_part="x", ddr_bus_bits=8, ddr_mhz=525)
