"""A hybrid integer graph: Linears over tokens for the accelerator, the rest for the host.

What ``quant.transformer`` exports a token model (an MLP over (B, T, D), a BERT encoder) to:
the ops of ``host.hybrid`` with each device op holding an ``IntGraph`` (a chain of 1x1
convolutions over the (D, 1, tokens) map). ``evaluate`` is the reference every backend must
equal bit for bit (device parts through ``IntGraph.evaluate``, host parts through the same numpy
functions the runtime uses); ``lower_hybrid`` compiles every device op to a Program. numpy only.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from ..arch import AccelConfig
from ..host.hybrid import (
    DeviceOp,
    HostOp,
    HybridProgram,
    HybridResult,
    execute,
    from_map,
    host_numerics,
    to_map,
)
from .ir import IntGraph
from .lower import lower


@dataclass
class HybridGraph:
    """Host ops and device ops (``DeviceOp.program`` an IntGraph) over numbered values."""

    ops: list[HostOp | DeviceOp]
    input_shapes: list[tuple[int, ...]]
    outputs: list[int]
    meta: dict = field(default_factory=dict)

    @property
    def graphs(self) -> list[IntGraph]:
        """The device ops' integer graphs, in order."""
        return [op.program for op in self.ops if isinstance(op, DeviceOp)]

    def run(self, inputs: Sequence[np.ndarray], numerics: str = "float") -> HybridResult:
        """The reference run: device ops by ``IntGraph.evaluate``, with every op's host time;
        softmax, LayerNorm and GELU in ``numerics`` ("float" or "integer", ``host.intops``)."""
        xs = HybridProgram(self.ops, self.input_shapes, self.outputs).check_inputs(inputs)

        def reference(op: DeviceOp, x: np.ndarray) -> tuple[np.ndarray, str, int]:
            return from_map(op.program.evaluate(to_map(x)), x), "reference", 0

        return execute(host_numerics(self.ops, numerics), xs, self.outputs, reference)

    def evaluate(self, inputs: Sequence[np.ndarray], numerics: str = "float") -> list[np.ndarray]:
        """Every output for a batch of inputs (the reference)."""
        return self.run(inputs, numerics).outputs

    def summary(self) -> str:
        """Op counts by kind and where they run."""
        dev = self.graphs
        layers = sum(len(g.layers) for g in dev)
        kinds = Counter(op.kind for op in self.ops if isinstance(op, HostOp))
        host = ", ".join(f"{k} x{n}" for k, n in sorted(kinds.items()))
        return (
            f"{len(dev)} device op(s) ({layers} Linear layers on the accelerator); "
            f"{sum(kinds.values())} host op(s): {host}"
        )


def lower_hybrid(
    graph: HybridGraph, cfg: AccelConfig, batch: int, numerics: str = "float"
) -> HybridProgram:
    """Compile every device op of ``graph`` for ``cfg`` at ``batch``; the host ops run softmax,
    LayerNorm and GELU in ``numerics``: "float" (float32) or "integer" (``host.intops``).

    ``meta['lower_seconds']`` records the lowering time, ``meta['host_numerics']`` the choice.
    """
    t0 = time.perf_counter()
    ops: list[HostOp | DeviceOp] = []
    for op in host_numerics(graph.ops, numerics):
        if isinstance(op, DeviceOp):
            op = DeviceOp(op.name, op.inputs, lower(op.program, cfg, batch), len(op.program.layers))
        ops.append(op)
    meta = dict(graph.meta, lower_seconds=time.perf_counter() - t0, config=cfg.name)
    meta["host_numerics"] = numerics
    return HybridProgram(ops, graph.input_shapes, graph.outputs, meta)
