"""Quantization methods as presets, all through the same QAT code.

A method is a per-layer ratio of weight formats (the same in every layer) and an activation
width. The first conv and the last linear stay Fixed-8 with 8-bit inputs by default, as is usual
(and as the paper does); ``keep_ends`` turns that off. Importing this module does not import
torch, so the command line can list the methods cheaply.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..boards import BoardError, target_config

if TYPE_CHECKING:
    import torch
    from torch import nn


@dataclass(frozen=True)
class Method:
    """A named quantization recipe."""

    name: str
    ratio: dict[str, float] | None
    doc: str
    act_bits: int = 4
    keep_ends: bool = True
    end_format: str = "fixed8"


METHODS: dict[str, Method] = {
    m.name: m
    for m in (
        Method("fp32", None, "no quantization (the baseline, fine-tuned for the same epochs)"),
        Method("fixed4", {"fixed4": 1.0}, "uniform Fixed-W4A4"),
        Method("pot4", {"pot4": 1.0}, "power-of-two W4, A4"),
        Method("sp2-4", {"sp2-4": 1.0}, "sum-of-two-powers W4 (MSQ's SP2), A4"),
        Method("msq", {"sp2-4": 0.5, "fixed4": 0.5}, "MSQ: SP2-4 + Fixed-4 rows, 1:1 (HPCA 2021)"),
        Method("ilmpq", {"fixed4": 0.95, "fixed8": 0.05}, "ILMPQ: intra-layer Fixed-4 + Fixed-8"),
        Method(
            "rmsmp",
            {"pot4": 0.60, "fixed4": 0.35, "fixed8": 0.05},
            "RMSMP: PoT-4 + Fixed-4 + Fixed-8 at the paper's XC7Z020 ratio 60:35:5",
        ),
        Method(
            "rmsmp-sp2",
            {"sp2-4": 0.60, "fixed4": 0.35, "fixed8": 0.05},
            "RMSMP with SP2-4 in place of PoT-4 (finer levels, same shift-add cost)",
        ),
    )
}


SHIFT_FORMATS = ("pot4", "sp2-4")
"""The shift-only 4-bit formats; ``at_preset`` maps a preset's onto a method's."""


def at_preset(m: Method, preset: str) -> Method:
    """``m`` with its rows in the ratio of accelerator preset ``preset``'s row groups, so the
    quantizer's ratio follows the hardware (issue 17: the device-filling presets derive their
    ratio from the part's LUT:DSP budget). The preset's shift rows take the method's shift
    format (rmsmp-sp2 at pynq-z1 is SP2-4 where pynq-z1 has PoT-4)."""
    try:
        cfg = target_config(preset)
    except BoardError as e:
        raise ValueError(f"method {m.name}@{preset}: {e}") from None
    if m.ratio is None or len(m.ratio) < 2:
        raise ValueError(
            f"method {m.name}@{preset}: only mixed methods take a preset's ratio; use {m.name}"
        )
    shift = [f for f in m.ratio if f in SHIFT_FORMATS]
    ratio: dict[str, float] = {}
    for fmt, share in cfg.row_ratio.items():
        fmt = shift[0] if fmt in SHIFT_FORMATS and shift else fmt
        ratio[fmt] = ratio.get(fmt, 0.0) + share
    if set(ratio) != set(m.ratio):
        raise ValueError(
            f"method {m.name}@{preset}: preset {preset} has rows {sorted(ratio)}, the method "
            f"{sorted(m.ratio)}; pick a preset with the method's formats"
        )
    counts = ":".join(f"{g.rows} {g.fmt}" for g in cfg.groups)
    return dataclasses.replace(
        m,
        name=f"{m.name}@{preset}",
        ratio=ratio,
        doc=f"{m.name} at preset {preset}'s rows ({counts})",
    )


def method(name: str) -> Method:
    """Look up a method, with a clear error. ``NAME@PRESET`` is method NAME at an accelerator
    preset's row ratio (``at_preset``)."""
    base, at, preset = name.partition("@")
    try:
        m = METHODS[base]
    except KeyError:
        raise ValueError(f"unknown method {base!r}; known: {sorted(METHODS)}") from None
    return at_preset(m, preset) if at else m


def quant_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The Conv2d/Linear layers of a model, in definition order."""
    from torch import nn

    return [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Conv2d | nn.Linear)]


def _input_signed(model: nn.Module, layers: list[tuple[str, nn.Module]], batch) -> dict[str, bool]:
    import torch

    seen: dict[str, bool] = {}
    hooks = [
        m.register_forward_pre_hook(
            lambda mod, args, name=n: seen.__setitem__(
                name, seen.get(name, False) or bool((args[0] < 0).any())
            )
        )
        for n, m in layers
    ]
    with torch.no_grad():
        model(*batch) if isinstance(batch, tuple) else model(batch)
    for h in hooks:
        h.remove()
    return seen


def reassign(model: nn.Module, m: Method) -> dict[str, list[str]]:
    """Re-assign every QAT layer's rows from its current weights at the method's ratio.

    RMSMP re-assigns periodically during QAT; layers that keep the ends' format are left alone.
    """
    from .assign import assign_rows

    layers = quant_layers(model)
    ends = {layers[0][0], layers[-1][0]} if m.keep_ends else set()
    out = {}
    for name, layer in layers:
        fmts = layer.wq.formats
        if m.ratio is not None and name not in ends:
            w = layer.weight.detach()
            fmts = assign_rows(w.reshape(len(w), -1).double().numpy(), m.ratio)
            layer.wq.set_formats(w, fmts)
        out[name] = list(fmts)
    return out


def prepare(
    model: nn.Module,
    m: Method,
    calib_input: torch.Tensor | tuple[torch.Tensor, ...],
    assignment: dict[str, list[str]] | None = None,
    sensitivity: dict[str, torch.Tensor] | None = None,
    split_rule: str = "error",
    granularity: int = 1,
) -> dict[str, list[str]]:
    """Turn ``model``'s Conv2d/Linear layers into QAT layers in place; return the assignment.

    ``assignment`` (from a checkpoint) is reused as is; otherwise each layer's rows are assigned
    at the method's ratio: by ``assign_rows`` (optimal on quantisation error) or, given per-row
    ``sensitivity`` (e.g. Hutchinson Hessian traces) or a ``split_rule`` other than "error", by
    ``assign_rmsmp``, which gives the 8-bit rows to the most sensitive rows (without a
    sensitivity: those that 4 bits fit worst) and splits the rest by ``split_rule``. Activation
    signedness comes from ``calib_input`` (a tensor, or a tuple of the model's positional inputs).
    Modules with a ``share_input_quantizer`` method (residual blocks) then move their first
    conv's input quantizer to the block input, so the shortcut sees the same integers; a model
    with ``attach_output_quantizer`` gets an unsigned quantizer on its last feature map.
    """
    from .assign import assign_rmsmp, assign_rows
    from .qat import ActQuantizer, to_qat

    if m.ratio is None:
        return {}
    layers = quant_layers(model)
    signed = _input_signed(model, layers, calib_input)
    ends = {layers[0][0], layers[-1][0]} if m.keep_ends else set()
    out = {}
    for name, layer in layers:
        w = layer.weight.detach()
        n = w.shape[0]
        if assignment is not None and name in assignment:
            fmts = list(assignment[name])
        elif name in ends:
            fmts = [m.end_format] * n
        elif sensitivity is not None or granularity > 1 or split_rule != "error":
            sens = sensitivity.get(name) if sensitivity is not None else None
            fmts = assign_rmsmp(
                w.reshape(n, -1).double().numpy(),
                m.ratio,
                None if sens is None else sens.double().numpy(),
                split_rule,
                granularity,
            )
        else:
            fmts = assign_rows(w.reshape(n, -1).double().numpy(), m.ratio)
        sign = signed.get(name, True)
        # 8-bit ends: the accelerator stores activations as signed 8-bit, so an unsigned
        # (post-ReLU) input of an end layer gets 7 bits, as the CLI's act_bits <= 7 does
        bits = (8 if sign else 7) if name in ends else m.act_bits
        to_qat(layer, fmts, bits, sign)
        out[name] = fmts
    for mod in model.modules():
        if hasattr(mod, "share_input_quantizer"):
            mod.share_input_quantizer()
    if hasattr(model, "attach_output_quantizer"):
        model.attach_output_quantizer(ActQuantizer(m.act_bits, signed=False))
    return out
