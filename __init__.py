"""rmsmp: row-wise mixed-scheme, mixed-precision DNN accelerators for Xilinx Zynq.

The public API is imported lazily so that the host side works with numpy alone.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .arch import AccelConfig, ConfigError

if TYPE_CHECKING:
    from .host.program import Program

__all__ = [
    "AccelConfig",
    "ConfigError",
    "Program",
    "compile",
    "from_qonnx",
    "quantize",
    "run",
    "run_with_stats",
    "to_qonnx",
]


def compile(model: object, example_input: object, config: AccelConfig | str) -> Program:
    """Lower a quantized torch model or an IntGraph for ``config`` (an AccelConfig, or a board
    or preset name) at the batch size ``example_input.shape[0]``, into one Program.

    A torch model is exported to its IntGraph first (``rmsmp.quant.export``); an IntGraph
    (``rmsmp.from_qonnx``'s, or a graph file's) compiles without PyTorch.
    """
    from .compiler.ir import IntGraph
    from .compiler.lower import compile_graph

    if not isinstance(model, IntGraph):
        from .quant.export import export

        model = export(model)
    return compile_graph(model, example_input, config)


def __getattr__(name: str) -> Any:
    if name == "quantize":
        from .quant.quantize import quantize

        return quantize
    if name in ("to_qonnx", "from_qonnx"):
        from .quant import qonnx_io

        return getattr(qonnx_io, name)
    if name in ("run", "run_with_stats"):
        from .host import runtime

        return getattr(runtime, name)
    if name == "Program":
        from .host.program import Program

        return Program
    raise AttributeError(name)
