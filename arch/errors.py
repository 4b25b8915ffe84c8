"""The errors arch raises, at the bottom of its import chain so every arch module can raise them.

Each message names the field or instruction at fault and the fix.
"""

from __future__ import annotations


class ConfigError(ValueError):
    """An AccelConfig that cannot be built; the message names the field and the fix."""


class IsaError(ValueError):
    """An instruction that cannot be encoded or decoded."""
