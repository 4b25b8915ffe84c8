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


def __getattr__(name: str) -> Any:
    if name == "quantize":
        from .compiler.quant import quantize

        return quantize
    if name == "compile":
        from .compiler.lower import compile_model

        return compile_model
    if name in ("to_qonnx", "from_qonnx"):
        from .compiler import qonnx_io

        return getattr(qonnx_io, name)
    if name in ("run", "run_with_stats"):
        from .host import runtime

        return getattr(runtime, name)
    if name == "Program":
        from .host.program import Program

        return Program
    raise AttributeError(name)
