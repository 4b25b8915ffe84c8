"""Running a model whose Linears run on the accelerator and whose other ops run on the host.

A transformer does not fit one accelerator Program: softmax, LayerNorm and GELU sit between its
Linears. Its compiled form (``HybridProgram``) is a list of ops over numbered values: host ops
(``hostops``) and device ops, each one accelerator Program over tokens (a Linear over
(B, *lead, D) runs as a 1x1 convolution over a (D, 1, prod(lead)) map, the tokens being the
GEMM's M dimension). Values 0..n_inputs-1 are the model inputs. ``run_hybrid`` runs every device
op on one opened device and reports where each op ran and how long it took (host seconds,
device cycles). numpy only, like the rest of the host side.
"""

from __future__ import annotations

import io
import json
import time
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .device import Device
from .errors import ProgramFormatError
from .hostops import HOST_OPS, with_numerics
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
    """(B, *lead, D) tokens as the (B, D, 1, M) feature map a 1x1 convolution walks (one row
    of M tokens: as fast as an (M, 1) column on the cycle model, with fewer instructions)."""
    b, d = x.shape[0], x.shape[-1]
    return np.ascontiguousarray(x.reshape(b, -1, d).transpose(0, 2, 1))[:, :, None, :]


def from_map(y: np.ndarray, like: np.ndarray) -> np.ndarray:
    """A (B, N, 1, M) output map back to tokens shaped like ``like`` with N features last."""
    b, n = y.shape[:2]
    return y[:, :, 0, :].transpose(0, 2, 1).reshape(*like.shape[:-1], n)


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


def host_numerics(ops: Sequence[HostOp | DeviceOp], numerics: str) -> list[HostOp | DeviceOp]:
    """``ops`` with softmax, LayerNorm and GELU set to run in ``numerics``: "float" (float32)
    or "integer" (I-BERT's integer approximations, ``hostops.intops``)."""
    return [
        HostOp(op.name, op.kind, op.inputs, with_numerics(op.kind, op.params, numerics))
        if isinstance(op, HostOp)
        else op
        for op in ops
    ]


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

    def save(self, path: str | Path) -> None:
        """Write the hybrid file: a zip of hybrid.json (ops, inputs, outputs, meta), params.npz
        (the host ops' arrays) and one Program file per device op."""
        arrays: dict[str, np.ndarray] = {}
        ops = []
        with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as z:
            for i, op in enumerate(self.ops):
                if isinstance(op, HostOp):
                    params = {k: _encode(v, arrays, f"{i}.{k}") for k, v in op.params.items()}
                    ops.append(
                        {"name": op.name, "kind": op.kind, "inputs": op.inputs} | {"params": params}
                    )
                    continue
                buf = io.BytesIO()
                op.program.save(buf)
                z.writestr(f"device{i}.rmsmp", buf.getvalue())
                ops.append({"name": op.name, "device": i, "inputs": op.inputs, "layers": op.layers})
            head = {
                "format": HYBRID_FORMAT,
                "ops": ops,
                "input_shapes": [list(s) for s in self.input_shapes],
                "outputs": self.outputs,
                "meta": self.meta,
            }
            z.writestr("hybrid.json", json.dumps(head, indent=1))
            buf = io.BytesIO()
            np.savez(buf, **arrays)
            z.writestr("params.npz", buf.getvalue())

    @classmethod
    def load(cls, path: str | Path) -> HybridProgram:
        """Read a hybrid file written by ``save`` (each Program verified as ``Program.load``)."""
        try:
            with zipfile.ZipFile(path) as z:
                head = json.loads(z.read("hybrid.json"))
                arrays = dict(np.load(io.BytesIO(z.read("params.npz")), allow_pickle=False))
                ops: list[HostOp | DeviceOp] = []
                for d in head["ops"]:
                    if "device" in d:
                        prog = Program.load(io.BytesIO(z.read(f"device{d['device']}.rmsmp")))
                        ops.append(DeviceOp(d["name"], d["inputs"], prog, d["layers"]))
                    else:
                        params = {k: _decode(v, arrays) for k, v in d["params"].items()}
                        ops.append(HostOp(d["name"], d["kind"], d["inputs"], params))
        except (zipfile.BadZipFile, KeyError, ValueError, TypeError) as e:
            raise ProgramFormatError(
                f"{path}: not a hybrid rmsmp file ({type(e).__name__}: {e}); recompile the model"
            ) from None
        shapes = [tuple(s) for s in head["input_shapes"]]
        return cls(ops, shapes, head["outputs"], head["meta"])

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


HYBRID_FORMAT = "rmsmp-hybrid-1"
"""The ``format`` field of a hybrid file."""


def is_hybrid_file(path: str | Path) -> bool:
    """Whether ``path`` is a hybrid file (a zip holding hybrid.json)."""
    try:
        with zipfile.ZipFile(path) as z:
            return "hybrid.json" in z.namelist()
    except (zipfile.BadZipFile, OSError):
        return False


def _encode(v: Any, arrays: dict[str, np.ndarray], key: str) -> Any:
    """A host op parameter as JSON; arrays go to ``arrays`` under ``key``."""
    if isinstance(v, np.ndarray):
        arrays[key] = v
        return {"array": key}
    if isinstance(v, np.dtype):
        return {"dtype": v.str}
    if isinstance(v, slice):
        return {"slice": [v.start, v.stop, v.step]}
    if isinstance(v, tuple):
        return {"tuple": [_encode(x, arrays, f"{key}.{i}") for i, x in enumerate(v)]}
    if isinstance(v, np.generic):
        return v.item()
    return v


def _decode(v: Any, arrays: dict[str, np.ndarray]) -> Any:
    """The parameter ``_encode`` wrote."""
    if isinstance(v, dict):
        if "array" in v:
            return arrays[v["array"]]
        if "dtype" in v:
            return np.dtype(v["dtype"])
        if "slice" in v:
            return slice(*v["slice"])
        if "tuple" in v:
            return tuple(_decode(x, arrays) for x in v["tuple"])
    return v


def run_hybrid(
    program: HybridProgram,
    inputs: Sequence[np.ndarray],
    backend: str = "golden",
    device: Device | None = None,
    numerics: str | None = None,
) -> HybridResult:
    """Run ``program`` on ``inputs``: host ops here, device ops on ``backend`` (one device,
    opened with the largest window any of its Programs needs, or ``device``, left open).
    ``numerics`` ("float" or "integer") overrides how the program's host ops were compiled to
    run softmax, LayerNorm and GELU."""
    xs = program.check_inputs(inputs)
    ops = program.ops if numerics is None else host_numerics(program.ops, numerics)
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

        return execute(ops, xs, program.outputs, on_device)
    finally:
        if owned:
            dev.close()
