"""Running a model whose Linears run on the accelerator and whose other ops run on the host.

A transformer does not fit one accelerator Program: softmax, LayerNorm and GELU sit between its
Linears. Its compiled form (``HybridProgram``) is a list of ops over numbered values: host ops
(``hostops``) and device ops, each one accelerator Program over tokens (a Linear over
(B, *lead, D) runs as a 1x1 convolution over a (D, prod(lead), 1) map, the tokens being the
GEMM's M dimension). Values 0..n_inputs-1 are the model inputs. ``run_hybrid`` runs every device
op on one opened device and reports where each op ran and how long it took (host seconds,
device cycles). numpy only, like the rest of the host side.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .device import Device
from .hostops import HOST_OPS
from .program import Program
from .runtime import open_device, run_with_stats


class HybridError(ValueError):
    """Inputs a hybrid model cannot take; the message names the input and the fix."""


@dataclass
class HostOp:
    """A host op: ``kind`` names a ``hostops.HOST_OPS`` function, applied to ``inputs``."""

    name: str
    kind: str
    inputs: list[int]
    params: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.kind not in HOST_OPS:
            raise HybridError(f"{self.name}: unknown host op {self.kind!r}")


@dataclass
class DeviceOp:
    """A chain of Linears over tokens on the accelerator: one integer input on the Program's
    input grid, shaped (B, *lead, D); the output (B, *lead, N) on the last layer's grid."""

    name: str
    inputs: list[int]
    program: Any
    """A ``host.program.Program`` (or, before lowering, the ``compiler.ir.IntGraph``)."""
    layers: int = 1


def to_map(x: np.ndarray) -> np.ndarray:
    """(B, *lead, D) tokens as the (B, D, M, 1) feature map a 1x1 convolution walks."""
    b, d = x.shape[0], x.shape[-1]
    return np.ascontiguousarray(x.reshape(b, -1, d).transpose(0, 2, 1))[..., None]


def from_map(y: np.ndarray, like: np.ndarray) -> np.ndarray:
    """A (B, N, M, 1) output map back to tokens shaped like ``like`` with N features last."""
    b, n = y.shape[:2]
    return y[..., 0].transpose(0, 2, 1).reshape(*like.shape[:-1], n)


@dataclass
class OpRun:
    """Where one op ran and what it cost: host seconds, or device cycles (and their seconds
    at the config's clock)."""

    name: str
    kind: str
    where: str
    seconds: float
    cycles: int = 0


@dataclass
class HybridResult:
    """Outputs of a hybrid run and every op's placement and cost."""

    outputs: list[np.ndarray]
    ops: list[OpRun]

    @property
    def placement(self) -> list[tuple[str, str]]:
        """(op, where it ran) for every op, as ``RunResult.placement``."""
        return [(o.name, o.where) for o in self.ops]

    @property
    def device_cycles(self) -> int:
        """Cycles the device ops took, summed."""
        return sum(o.cycles for o in self.ops)

    @property
    def host_seconds(self) -> float:
        """Seconds the host ops took, summed."""
        return sum(o.seconds for o in self.ops if o.where == "host")


def execute(
    ops: Sequence[HostOp | DeviceOp],
    inputs: Sequence[np.ndarray],
    outputs: Sequence[int],
    device: Callable[[DeviceOp, np.ndarray], tuple[np.ndarray, str, int]],
) -> HybridResult:
    """Run ``ops`` in order; ``device(op, x)`` runs a device op on its (B, *lead, D) integer
    input and returns (output, where, cycles). Returns the values named by ``outputs``."""
    env: dict[int, np.ndarray] = dict(enumerate(np.asarray(x) for x in inputs))
    runs = []
    for i, op in enumerate(ops):
        xs = [env[j] for j in op.inputs]
        t0 = time.perf_counter()
        if isinstance(op, HostOp):
            y, where, cycles = HOST_OPS[op.kind](xs, op.params), "host", 0
        else:
            y, where, cycles = device(op, xs[0])
        runs.append(OpRun(op.name, getattr(op, "kind", "device"), where, 0.0, cycles))
        runs[-1].seconds = time.perf_counter() - t0
        env[len(inputs) + i] = y
    return HybridResult([env[j] for j in outputs], runs)


@dataclass
class HybridProgram:
    """A compiled hybrid model: host ops and device ops (each holding a Program)."""

    ops: list[HostOp | DeviceOp]
    input_shapes: list[tuple[int, ...]]
    """Per-sample shape of every input."""
    outputs: list[int]
    meta: dict = field(default_factory=dict)

    @property
    def programs(self) -> list[Program]:
        """The device ops' Programs, in order."""
        return [op.program for op in self.ops if isinstance(op, DeviceOp)]

    def check_inputs(self, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
        """The inputs as arrays, once their number and per-sample shapes match."""
        if len(inputs) != len(self.input_shapes):
            raise HybridError(
                f"the model takes {len(self.input_shapes)} input(s), got {len(inputs)}; pass "
                "one array per model input, in the model's argument order"
            )
        out = []
        for k, (x, shape) in enumerate(zip(inputs, self.input_shapes, strict=True)):
            x = np.asarray(x)
            if x.ndim < 1 or tuple(x.shape[1:]) != tuple(shape):
                want = ", ".join(["B", *map(str, shape)])
                raise HybridError(f"input {k} has shape {x.shape}, expected ({want})")
            out.append(x)
        if len({x.shape[0] for x in out}) != 1:
            raise HybridError("the inputs have different batch sizes; give every input one batch")
        return out


def run_hybrid(
    program: HybridProgram,
    inputs: Sequence[np.ndarray],
    backend: str = "golden",
    device: Device | None = None,
) -> HybridResult:
    """Run ``program`` on ``inputs``: host ops here, device ops on ``backend`` (one device,
    opened with the largest window any of its Programs needs, or ``device``, left open)."""
    xs = program.check_inputs(inputs)
    programs = program.programs
    owned = device is None and bool(programs)
    dev = device
    if owned:
        largest = max(programs, key=lambda p: p.window_size)
        dev = open_device(largest, backend)
    try:

        def on_device(op: DeviceOp, x: np.ndarray) -> tuple[np.ndarray, str, int]:
            res = run_with_stats(op.program, to_map(x), device=dev)
            return from_map(res.output, x), dev.name, res.total_cycles

        return execute(program.ops, xs, program.outputs, on_device)
    finally:
        if owned:
            dev.close()
