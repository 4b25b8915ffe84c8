"""Running a Program on a Device: input quantisation, im2col, DMA images, control, gathering.

numpy only. The same code drives every backend through the ``Device`` interface: ``golden``
(``rmsmp.sim.golden.GoldenDevice``), ``rtl`` (``rmsmp.sim.verilator.RtlDevice``) or a device
object passed in (e.g. a board).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..arch import isa, layout, numerics, regs
from ..arch.layout import Entry
from .device import Device, DeviceTimeoutError
from .errors import AcceleratorError, ConfigMismatchError
from .program import LayerRecord, Program
from .tensors import im2col, out_from_entries, x_entries

DEFAULT_TIMEOUT_CYCLES = 100_000_000
"""Cycle budget of one layer run unless the caller gives one."""

_FLOAT = (np.float32, np.float64)
_INT = (np.int8, np.int16, np.int32, np.int64)
_HINTS = {
    isa.Error.ILLEGAL_OPCODE: "the instruction memory is not a valid program; re-run rmsmp compile",
    isa.Error.BAD_OPERAND: "an operand lies outside an on-chip buffer; the Program does not match "
    "the hardware's buffer depths",
    isa.Error.DMA_WINDOW: "a transfer falls outside WINDOW_BASE..WINDOW_LIMIT; the window is "
    "smaller than the Program needs",
    isa.Error.AXI_RESP: "the memory system answered with an AXI error; check the window's "
    "physical address",
}


@dataclass
class RunResult:
    """Output of a run and what it cost.

    ``layer_cycles[i]`` are the accelerator cycles of ``program.layers[i]`` summed over batch
    chunks; ``placement`` lists every step and where it ran ("host" or the device's name).
    """

    output: np.ndarray
    layer_cycles: list[int]
    total_cycles: int
    mac_cycles: int
    dma_beats: int
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


def open_device(program: Program, backend: str) -> Device:
    """A fresh device of ``backend`` ("golden" or "rtl") with a window the Program fits in."""
    if backend == "golden":
        from ..sim.golden import GoldenDevice

        return GoldenDevice(program.config, program.window_size)
    if backend == "rtl":
        from ..sim.verilator import RtlDevice

        return RtlDevice(program.config, program.window_size)
    raise ValueError(f"unknown backend {backend!r}; use 'golden' or 'rtl', or pass device=")


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


def _describe(program: Program, rec: LayerRecord, pc: int) -> str:
    seg = program.segments["insn"]
    n = program.config.insn_bits // 8
    at = rec.insn_offset + pc * n - seg.offset
    if not (0 <= pc < rec.insn_count and 0 <= at and at + n <= len(seg.data)):
        return ""
    insn = isa.decode(program.config, int.from_bytes(seg.data[at : at + n], "little"))
    if insn is None:
        return ""
    return f"{insn.op.name} " + " ".join(f"{k}={v}" for k, v in insn.args.items())


def _run_layer(
    device: Device, program: Program, rec: LayerRecord, y: np.ndarray, timeout_cycles: int
) -> tuple[np.ndarray, tuple[int, int, int]]:
    cfg = program.config
    if rec.kind == "conv":
        a = im2col(y, rec.kernel[0], rec.kernel[1], rec.stride, rec.padding)
    else:
        a = y.reshape(y.shape[0], -1)
    if a.shape != (rec.m, rec.k):
        raise ValueError(
            f"layer {rec.name}: GEMM input is {a.shape}, the Program expects ({rec.m}, {rec.k}); "
            "the Program file is inconsistent, re-run rmsmp compile"
        )
    device.write(rec.in_offset, layout.pack(cfg, Entry.X, x_entries(a, cfg.cols, rec.kt)))
    device.write_reg("INSN_ADDR", rec.insn_offset)
    device.write_reg("INSN_COUNT", rec.insn_count)
    device.write_reg("CTRL", regs.CTRL_START)
    try:
        device.wait(timeout_cycles)
    except DeviceTimeoutError as e:
        raise TimeoutError(
            f"layer {rec.name!r} did not finish within {timeout_cycles} cycles on "
            f"{device.name!r}; pass a larger timeout_cycles or check the hardware"
        ) from e
    status = device.read_reg("STATUS")
    if status & regs.Status.ERROR or not status & regs.Status.DONE:
        code = device.read_reg("ERROR")
        pc = device.read_reg("PC")
        try:
            err = isa.Error(code)
            name, hint = err.name, _HINTS.get(err, "")
        except ValueError:
            name, hint = f"UNKNOWN({code})", ""
        if not status & regs.Status.ERROR:
            name, hint = "NOT_DONE", f"STATUS {status:#x} after wait"
        detail = "; ".join(s for s in (_describe(program, rec, pc), hint) if s)
        raise AcceleratorError(name, pc, rec.name, detail)
    out = layout.unpack(cfg, Entry.OUT, device.read(rec.out_offset, rec.out_size))
    g = out_from_entries(out, rec.n_tiles, rec.m)[:, list(rec.keep)]
    b = y.shape[0]
    if rec.kind == "conv":
        _, oh, ow = rec.out_shape
        g = g.reshape(b, oh, ow, -1).transpose(0, 3, 1, 2)
    stats = (
        (device.read_reg("CYCLES_HI") << 32) | device.read_reg("CYCLES_LO"),
        device.read_reg("MAC_CYCLES"),
        device.read_reg("DMA_BEATS"),
    )
    return np.ascontiguousarray(g), stats


def run_with_stats(
    program: Program,
    x: np.ndarray,
    backend: str = "golden",
    device: Device | None = None,
    timeout_cycles: int = DEFAULT_TIMEOUT_CYCLES,
) -> RunResult:
    """Run ``program`` on a batch ``x`` and return the int64 output with cycle counts.

    Float inputs are quantized with the Program's input scale; integer inputs are taken as
    already quantized. Any batch size works: the input is cut into chunks of ``program.batch``
    (the last one zero padded). ``device`` overrides ``backend`` and is left open.
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
        for rec in program.layers:
            prep = "im2col + pack X" if rec.kind == "conv" else "pack X"
            placement += [
                (f"{rec.name}: {prep}", "host"),
                (f"{rec.name}: GEMM + requant", dev.name),
                (f"{rec.name}: unpack OUT", "host"),
            ]
        placement.append(("gather output channels", "host"))
        cycles = [0] * len(program.layers)
        mac = dma = 0
        outs = []
        b = program.batch
        for c0 in range(0, xq.shape[0], b):
            chunk = xq[c0 : c0 + b]
            n = chunk.shape[0]
            y = np.concatenate([chunk, np.zeros((b - n, *chunk.shape[1:]), np.int64)])
            for i, rec in enumerate(program.layers):
                y, (cyc, mc, beats) = _run_layer(dev, program, rec, y, timeout_cycles)
                cycles[i] += cyc
                mac += mc
                dma += beats
            outs.append(y[:n])
    finally:
        if owned:
            dev.close()
    out = np.concatenate(outs)[:, program.output_gather()]
    return RunResult(out.astype(np.int64), cycles, sum(cycles), mac, dma, placement)


def run(
    program: Program,
    x: np.ndarray,
    backend: str = "golden",
    device: Device | None = None,
    timeout_cycles: int = DEFAULT_TIMEOUT_CYCLES,
) -> np.ndarray:
    """Run ``program`` on a batch ``x``; the int64 output, shaped (B, *program.output_shape)."""
    return run_with_stats(program, x, backend, device, timeout_cycles).output
