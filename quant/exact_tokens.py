"""The exact fake-quant token model: a transformer's eval mode as its hybrid graph computes it.

A QAT transformer's float forward rounds its requantisation in float, and the captured hybrid
graph (``quant.transformer``) adds 8-bit grids on the device outputs and the attention
operands, so the two differ by more than a tie. ``ExactTokenModel`` is the torch model whose
eval forward is that hybrid graph: every device op (the QAT Linears) as int64 torch ops
(``quant.exact``, the integer definition of ``arch.numerics``, as ``exact_qat`` does for a
CNN), every host op (embeddings, softmax, LayerNorm, GELU, the attention matmuls) through the
one numpy function the host runtime runs. So its outputs equal every backend's bit for bit.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from ..compiler.hybrid import HybridGraph
from ..host.hybrid import DeviceOp, execute, from_map, host_numerics, to_map
from .exact import evaluate


def _exact_device(op: DeviceOp, x: np.ndarray) -> tuple[np.ndarray, str, int]:
    y = evaluate(op.program, torch.from_numpy(np.ascontiguousarray(to_map(x), np.int64)))
    return from_map(y.numpy(), x), "exact", 0


class ExactTokenModel(nn.Module):
    """A captured token model, evaluated exactly: ``forward(*inputs)`` returns the graph's
    first output as a float32 tensor (``outputs`` gives them all).

    ``numerics`` ("float" or "integer") picks how softmax, LayerNorm and GELU run, as
    ``host.hybrid.run_hybrid`` does.
    """

    def __init__(self, graph: HybridGraph, numerics: str = "float") -> None:
        super().__init__()
        self.graph = graph
        self.ops = host_numerics(graph.ops, numerics)

    def outputs(self, inputs: Sequence[torch.Tensor | np.ndarray]) -> list[np.ndarray]:
        """Every output of the graph for a batch of ``inputs`` (the model's positional inputs)."""
        xs = [x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else x for x in inputs]
        return execute(self.ops, xs, self.graph.outputs, _exact_device).outputs

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(self.outputs(inputs)[0])


__all__ = ["ExactTokenModel"]
