"""The boards as data: part, clock and device resources (public datasheet numbers)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Board:
    """A Zynq-7000 board: its part and what the programmable logic offers."""

    name: str
    part: str
    luts: int
    ffs: int
    dsps: int
    bram36: int
    ddr_gbps: float


BOARDS: dict[str, Board] = {
    "pynq-z1": Board("pynq-z1", "xc7z020clg400-1", 53_200, 106_400, 220, 140, 1.6),
    "zc706": Board("zc706", "xc7z045ffg900-2", 218_600, 437_200, 900, 545, 4.2),
}


def board(name: str) -> Board:
    """Look up a board by name, with a clear error."""
    try:
        return BOARDS[name]
    except KeyError:
        raise ValueError(f"unknown board {name!r}; known: {sorted(BOARDS)}") from None
