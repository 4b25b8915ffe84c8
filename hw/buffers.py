"""The on-chip buffers (W, X, Q, R, ACC, OUT): their shapes and the signatures of their ports.

The shell owns the memories; units get typed read/write ports. Read ports are synchronous and
not transparent (data one cycle after the address, as a block RAM gives it).
"""

from __future__ import annotations

import enum

from amaranth import Shape, unsigned
from amaranth.lib.memory import Memory, ReadPort, WritePort

from ..arch import AccelConfig
from ..arch.isa import BUFFERS, buffer_shapes

Buffer = enum.Enum("Buffer", [(b.upper(), b) for b in BUFFERS])
Buffer.__doc__ = """The on-chip buffers (``arch.isa.BUFFERS``); the LOAD targets are named as in
``arch.isa.Buf``."""


def shape(cfg: AccelConfig, buf: Buffer) -> tuple[int, int]:
    """(entry bits, depth) of a buffer (``arch.isa.buffer_shapes``)."""
    return buffer_shapes(cfg)[buf.value]


def addr_width(cfg: AccelConfig, buf: Buffer) -> int:
    """Address bits of a buffer's ports."""
    return Shape.cast(range(shape(cfg, buf)[1])).width


def read_sig(cfg: AccelConfig, buf: Buffer) -> ReadPort.Signature:
    """Signature of a read port of ``buf`` (memory view; a unit takes it flipped, with ``In``)."""
    return ReadPort.Signature(addr_width=addr_width(cfg, buf), shape=unsigned(shape(cfg, buf)[0]))


def write_sig(cfg: AccelConfig, buf: Buffer) -> WritePort.Signature:
    """Signature of a write port of ``buf`` (memory view)."""
    return WritePort.Signature(addr_width=addr_width(cfg, buf), shape=unsigned(shape(cfg, buf)[0]))


def memory(cfg: AccelConfig, buf: Buffer) -> Memory:
    """The memory of ``buf`` (contents undefined at power-up, kept between runs)."""
    bits, depth = shape(cfg, buf)
    return Memory(shape=unsigned(bits), depth=depth, init=[])
