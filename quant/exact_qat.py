"""A QAT CNN whose eval mode is exact: its integer graph, run in int64 torch ops.

``exact_eval(model)`` gives a QAT-prepared CNN (``methods.prepare``) the ``ExactEval`` mixin, the
way ``qat.to_qat`` turns a Conv2d into a QConv2d: training keeps the float fake-quant forward
(STE), and eval mode returns exactly what the exported integer graph, the golden model and the
accelerator compute, so the fake-quant accuracy is the integer accuracy.
"""

from __future__ import annotations

import copy
import functools

import torch
from torch import fx, nn

from ..compiler.ir import IntGraph
from .exact import evaluate
from .export import export_qat


def _state_key(model: nn.Module, shape: tuple[int, ...]) -> tuple:
    """What the exported graph depends on: every tensor's storage and version, the formats."""
    tensors = [*model.parameters(), *model.buffers()]
    formats = tuple(tuple(m.wq.formats) for m in model.modules() if hasattr(m, "wq"))
    return shape, formats, tuple((t.data_ptr(), t._version) for t in tensors)


class ExactEval:
    """Mixin of a QAT CNN: in eval mode ``forward`` is its integer graph, in int64 torch ops.

    The graph is ``export.export_qat`` of the model's current state (cached until a parameter,
    buffer or row format changes); the output is its integers times the output scale, float64.
    Training mode, an fx trace (capture) and a model whose activation steps are not yet
    initialised take the float fake-quant forward.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if (
            isinstance(x, fx.Proxy)
            or self.training
            or not all(bool(m.initialized) for m in self.modules() if hasattr(m, "initialized"))
        ):
            return self.float_forward(x)
        graph = self.exact_graph(tuple(x.shape[1:]))
        x_int = torch.from_numpy(graph.quantize_input(x.detach().cpu().double().numpy()))
        return evaluate(graph, x_int.to(x.device)).to(torch.float64) * graph.output_scale

    def float_forward(self, x: torch.Tensor) -> torch.Tensor:
        """The float fake-quant forward (what training runs), in the current mode."""
        return super().forward(x)

    def exact_graph(self, input_shape: tuple[int, ...]) -> IntGraph:
        """The integer graph that eval mode runs for a per-sample ``input_shape``."""
        key = _state_key(self, input_shape)
        cached = self.__dict__.get("_exact_cache")
        if cached is None or cached[0] != key:
            cpu = all(t.device.type == "cpu" for t in self.parameters())
            model = self if cpu else copy.deepcopy(self).cpu()
            graph = export_qat(model, input_shape)
            self.__dict__["_exact_cache"] = cached = (key, graph)
        return cached[1]


@functools.cache
def _exact_class(cls: type) -> type:
    return type(f"Exact{cls.__name__}", (ExactEval, cls), {"__module__": cls.__module__})


def exact_eval(model: nn.Module) -> nn.Module:
    """Make a QAT CNN exact in eval mode (in place, like ``qat.to_qat``); returns it."""
    if not isinstance(model, ExactEval):
        model.__class__ = _exact_class(type(model))
    return model


__all__ = ["ExactEval", "exact_eval"]
