"""rmsmp.arch: the single source of truth (config, numerics, ISA, layouts, registers).

numpy only, so the host side installs on a board without Amaranth or PyTorch.
"""

from .config import PRESETS, AccelConfig, ConfigError, RowGroup
from .numerics import FORMATS, Scheme, WeightFormat, weight_format

__all__ = [
    "FORMATS",
    "PRESETS",
    "AccelConfig",
    "ConfigError",
    "RowGroup",
    "Scheme",
    "WeightFormat",
    "weight_format",
]
