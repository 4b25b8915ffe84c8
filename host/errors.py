"""Errors the host runtime raises; each message names the problem and the fix."""

from __future__ import annotations


class ProgramFormatError(ValueError):
    """A Program file that cannot be read (truncated, foreign, corrupted or too new)."""


class ConfigMismatchError(RuntimeError):
    """The device is not the accelerator the Program was compiled for."""


class AcceleratorError(RuntimeError):
    """The accelerator stopped a run with an error code.

    ``code`` is the ``isa.Error`` name, ``pc`` the PC register (an index into the Program's one
    instruction stream: the faulting instruction, or how many were dispatched for a DEADLOCK)
    and ``layer`` the name of the layer that instruction belongs to.
    """

    def __init__(self, code: str, pc: int, layer: str, detail: str = "") -> None:
        self.code = code
        self.pc = pc
        self.layer = layer
        msg = f"accelerator error {code} at instruction {pc} (layer {layer!r})"
        super().__init__(f"{msg}: {detail}" if detail else msg)
