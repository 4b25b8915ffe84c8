"""Running a Program on a Device: input quantisation and layout, control, output gathering.

numpy only. The same code drives every backend through the ``Device`` interface: a backend
named in ``host.backends`` (``golden``, ``rtl``, ``pynq``, ``pynq-sim``, or any registered one)
or a device object passed in.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ..arch import isa, layout, numerics, regs
from ..arch.layout import Entry
from . import backends
from .device import Device, DeviceTimeoutError
from .errors import AcceleratorError, ConfigMismatchError
from .program import Program

DEFAULT_TIMEOUT_CYCLES = 100_000_000
"""Cycle budget of one layer run unless the caller gives one."""

_FLOAT = (np.float32, np.float64)
_INT = (np.int8, np.int16, np.int32, np.int64)
_HINTS = {
    isa.Error.ILLEGAL_OPCODE: "the instruction memory is not a valid program; recompile it with "
    "rmsmp.compile",
    isa.Error.BAD_OPERAND: "an operand lies outside an on-chip buffer; the Program does not match "
    "the hardware's buffer depths",
    isa.Error.DMA_WINDOW: "a transfer falls outside WINDOW_BASE..WINDOW_LIMIT; the window is "
    "smaller than the Program needs",
    isa.Error.AXI_RESP: "the memory system answered with an AXI error; check the window's "
    "physical address",
    isa.Error.DEADLOCK: "the units wait for dependency tokens that never come; the Program's "
    "tokens are inconsistent, recompile it",
    isa.Error.AXI_TIMEOUT: "an AXI handshake stalled past the watchdog; the memory port does not "
    "answer (check the HP port and its clock)",
    isa.Error.BAD_WINDOW: "WINDOW_BASE must be burst-aligned and WINDOW_LIMIT >= WINDOW_BASE; "
    "allocate the window on a burst boundary",
}


@dataclass
class RunResult:
    """Output of a run and what it cost (counters summed over batch chunks).

    ``placement`` lists every step and where it ran ("host" or the device's name).
    """

    output: np.ndarray
    total_cycles: int
    mac_cycles: int
    dma_beats: int
    load_cycles: int
    store_cycles: int
    placement: list[tuple[str, str]]


def quantize_input(program: Program, x: np.ndarray) -> np.ndarray:
    """Validate ``x`` and return the int64 integers the first layer consumes."""
    if not isinstance(x, np.ndarray):
        raise TypeError(
            f"input must be a numpy array, got {type(x).__name__}; convert it first "
            "(e.g. tensor.numpy() or np.asarray(x))"
        )
    if x.ndim != 1 + len(program.input_shape) or tuple(x.shape[1:]) != program.input_shape:
        expected = ", ".join(["B", *map(str, program.input_shape)])
        raise ValueError(f"input has shape {x.shape}, expected ({expected})")
    if x.shape[0] < 1:
        raise ValueError("input batch is empty; pass at least one sample")
    lo, hi = program.input_lo, program.input_hi
    if x.dtype.type in _FLOAT:
        if not np.isfinite(x).all():
            raise ValueError("input contains NaN or infinity; clean the input first")
        return numerics.quantize_activation(x, program.input_scale, lo, hi)
    if x.dtype.type in _INT:
        if x.min() < lo or x.max() > hi:
            raise ValueError(
                f"integer input must already be quantized to [{lo}, {hi}], got values in "
                f"[{x.min()}, {x.max()}]; pass float32 to have it quantized"
            )
        return x.astype(np.int64)
    raise TypeError(
        f"input dtype {x.dtype} is not accepted; pass float32/float64 (real values, quantized "
        "with the Program's input scale) or int8/int16/int32/int64 (already quantized)"
    )


def open_device(program: Program, backend: str, **options: Any) -> Device:
    """A fresh device of the registered ``backend`` with a window the Program fits in;
    ``options`` go to the backend's factory."""
    return backends.open_backend(backend, program.config, program.window_size, **options)


def check_identity(program: Program, device: Device) -> None:
    """Raise ConfigMismatchError unless ``device`` is the accelerator ``program`` was built for."""
    magic = device.read_reg("MAGIC")
    if magic != regs.MAGIC:
        raise ConfigMismatchError(
            f"device {device.name!r} reads MAGIC {magic:#010x}, not {regs.MAGIC:#010x}: it is not "
            "an rmsmp accelerator; check the bitstream and the register address"
        )
    got = f"{(device.read_reg('CONFIG_HASH_HI') << 32) | device.read_reg('CONFIG_HASH_LO'):016x}"
    if got != program.config_hash:
        raise ConfigMismatchError(
            f"Program was compiled for config {program.config.name!r} (hash "
            f"{program.config_hash}) but device {device.name!r} has config hash {got}; recompile "
            "the model for this hardware, or build the hardware from the Program's config"
        )


def _describe(program: Program, pc: int) -> str:
    """The instruction at index ``pc`` and the layer it belongs to, for error messages."""
    seg = program.segments["insn"]
    n = program.config.insn_bits // 8
    at = pc * n - seg.offset
    if not (0 <= pc < program.insn_count and 0 <= at and at + n <= len(seg.data)):
        return ""
    insn = isa.decode(program.config, int.from_bytes(seg.data[at : at + n], "little"))
    if insn is None:
        return ""
    layer = program.pass_at(pc).name
    return f"layer {layer}: {insn.op.name} " + " ".join(f"{k}={v}" for k, v in insn.args.items())


def _counters(device: Device) -> np.ndarray:
    return np.array(
        [
            (device.read_reg("CYCLES_HI") << 32) | device.read_reg("CYCLES_LO"),
            device.read_reg("MAC_CYCLES"),
            device.read_reg("DMA_BEATS"),
            device.read_reg("LOAD_CYCLES"),
            device.read_reg("STORE_CYCLES"),
        ],
        dtype=np.int64,
    )


def _run_chunk(
    device: Device, program: Program, xq: np.ndarray, timeout_cycles: int
) -> tuple[np.ndarray, np.ndarray]:
    """One batch chunk: input map in, every layer on the device, output map out."""
    cfg = program.config
    first, last = program.layers[0], program.layers[-1]
    x = xq if xq.ndim == 4 else xq.reshape(*xq.shape, 1, 1)
    if program.input_fold is not None:
        x = program.input_fold.apply(x)
    slots = np.asarray(program.input_slots, dtype=np.int64)
    x = np.where((slots >= 0)[None, :, None, None], x[:, np.maximum(slots, 0)], 0)
    chunks = len(slots) // cfg.cols  # the map's, where the first pass reads it as channels
    device.write(first.in_offset, layout.pack(cfg, Entry.X, layout.to_fmap(cfg, x, chunks)))
    device.write_reg("INSN_ADDR", 0)
    device.write_reg("INSN_COUNT", program.insn_count)
    device.write_reg("CTRL", regs.CTRL_START)
    try:
        device.wait(timeout_cycles)
    except DeviceTimeoutError as e:
        raise TimeoutError(
            f"the Program did not finish within {timeout_cycles} cycles on {device.name!r}; "
            "pass a larger timeout_cycles or check the hardware"
        ) from e
    status = device.read_reg("STATUS")
    if status & regs.Status.ERROR or not status & regs.Status.DONE:
        code, pc = device.read_reg("ERROR"), device.read_reg("PC")
        unit = device.read_reg("FAULT_UNIT")
        try:
            err = isa.Error(code)
            name, hint = err.name, _HINTS.get(err, "")
        except ValueError:
            name, hint = f"UNKNOWN({code})", ""
        if not status & regs.Status.ERROR:
            name, hint = "NOT_DONE", f"STATUS {status:#x} after wait"
        try:
            where = f"{isa.Unit(unit).name.lower()} unit"
        except ValueError:
            where = f"unit {unit}"
        detail = "; ".join(s for s in (where, _describe(program, pc), hint) if s)
        layer = program.pass_at(pc).name
        raise AcceleratorError(name, pc, layer, detail)
    oh, ow = last.out_hw
    out = layout.unpack(cfg, Entry.OUT, device.read(last.out_offset, last.out_size))
    y = layout.from_fmap(cfg, out, xq.shape[0], last.out_tiles, oh, ow)
    return y, _counters(device)


def run_with_stats(
    program: Program,
    x: np.ndarray,
    backend: str = "golden",
    device: Device | None = None,
    timeout_cycles: int = DEFAULT_TIMEOUT_CYCLES,
) -> RunResult:
    """Run ``program`` on a batch ``x`` and return the int64 output with the device counters.

    Float inputs are quantized with the Program's input scale; integer inputs are taken as
    already quantized. Any batch size works: the input is cut into chunks of ``program.batch``
    (the last one zero padded), and each chunk runs every layer in one device run. ``device``
    overrides ``backend`` and is left open.
    """
    if not isinstance(timeout_cycles, int) or timeout_cycles < 1:
        raise ValueError(f"timeout_cycles must be a positive int, got {timeout_cycles!r}")
    xq = quantize_input(program, x)
    placement = [("quantize input", "host")] if x.dtype.type in _FLOAT else []
    owned = device is None
    dev = open_device(program, backend) if owned else device
    try:
        check_identity(program, dev)
        if dev.window_size < program.window_size:
            raise ValueError(
                f"device window is {dev.window_size} bytes, the Program needs "
                f"{program.window_size}; open the device with a larger window"
            )
        limit = dev.window_base + program.window_size
        if limit > 0xFFFF_FFFF:
            raise ValueError(
                f"window [{dev.window_base:#x}, {limit:#x}) does not fit 32-bit registers; "
                "place the window lower in memory"
            )
        dev.write_reg("WINDOW_BASE", dev.window_base)
        dev.write_reg("WINDOW_LIMIT", limit)
        for seg in program.segments.values():
            dev.write(seg.offset, seg.data)
        placement.append(("input map layout", "host"))
        placement.extend((rec.describe(), dev.name) for rec in program.layers)
        placement.append(("gather output channels", "host"))
        totals = np.zeros(5, dtype=np.int64)
        outs = []
        b = program.batch
        for c0 in range(0, xq.shape[0], b):
            chunk = xq[c0 : c0 + b]
            n = chunk.shape[0]
            padded = np.concatenate([chunk, np.zeros((b - n, *chunk.shape[1:]), np.int64)])
            y, stats = _run_chunk(dev, program, padded, timeout_cycles)
            totals += stats
            outs.append(y[:n])
    finally:
        if owned:
            dev.close()
    y = np.concatenate(outs)[:, program.output_gather()]
    if len(program.output_shape) == 1:
        y = y.reshape(y.shape[0], -1)
    cyc, mac, dma, ld, st = (int(v) for v in totals)
    return RunResult(y.astype(np.int64), cyc, mac, dma, ld, st, placement)


def run(
    program: Program,
    x: np.ndarray,
    backend: str = "golden",
    device: Device | None = None,
    timeout_cycles: int = DEFAULT_TIMEOUT_CYCLES,
    dequantize: bool = False,
) -> np.ndarray:
    """Run ``program`` on a batch ``x``; the int64 output, shaped (B, *program.output_shape),
    or with ``dequantize`` its real values (float32, times the output scale)."""
    y = run_with_stats(program, x, backend, device, timeout_cycles).output
    return program.dequantize(y) if dequantize else y
