"""Quantization-aware training modules: per-row mixed-scheme weights, learned activation steps.

Weights: every output row of a Conv2d/Linear has a format from ``arch.numerics`` (its integer
level set) and a learnable per-row step ``alpha``. The forward pass is
``alpha * level(clamp(w / alpha))`` with a straight-through estimator: the gradient reaches ``w``
inside the clip range and ``alpha`` gets LSQ's gradient ``level - w/alpha`` (``±max`` outside).
Activations: a learnable step ``s`` (LSQ), ``s * round(clamp(x / s, lo, hi))``, unsigned after
ReLU, signed where the input can be negative (the image). BatchNorm stays a separate module
during training; because scales are per row, folding it at export only rescales ``alpha``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F  # noqa: N812 - the conventional name
from torch import nn

from ..arch import numerics
from .assign import best_scale


def _levels(fmt: str) -> torch.Tensor:
    return torch.as_tensor(numerics.weight_format(fmt).levels(), dtype=torch.float32)


def round_to_levels(v: torch.Tensor, levels: torch.Tensor) -> torch.Tensor:
    """Nearest level of every element (ties go to the lower level); no gradient."""
    mids = (levels[1:] + levels[:-1]) / 2
    return levels[torch.bucketize(v, mids)]


def ste_levels(v: torch.Tensor, levels: torch.Tensor) -> torch.Tensor:
    """``level(clamp(v))`` in the forward pass, identity inside the clip range backward."""
    vc = torch.clamp(v, float(levels[0]), float(levels[-1]))
    return vc + (round_to_levels(vc.detach(), levels) - vc).detach()


class RowQuantizer(nn.Module):
    """Fake-quantizes a weight [N, ...] row by row with each row's format and learnable step."""

    scale_step_gradient = False
    """Scale each step's gradient by LSQ's 1/sqrt(K * max_level) (K: the row's weights), so a
    wide-range format (PoT's 64) does not take larger relative steps; the forward is unchanged.
    Off by default, as every checkpoint so far was trained (``scale_step_gradients``)."""

    def __init__(self, weight: torch.Tensor, formats: list[str]) -> None:
        super().__init__()
        n = weight.shape[0]
        if len(formats) != n:
            raise ValueError(f"need one format per output row ({n}), got {len(formats)}")
        self.formats: list[str] = []
        self.alpha = nn.Parameter(torch.ones(n))
        self._groups: dict[str, torch.Tensor] = {}
        self.set_formats(weight, formats)

    def set_formats(self, weight: torch.Tensor, formats: list[str]) -> int:
        """(Re)assign the rows' formats; rows whose format changes get a fresh step.

        The step stays the same Parameter, so an optimizer holding it keeps working (RMSMP
        re-assigns rows during QAT). Returns how many rows changed format.
        """
        n = weight.shape[0]
        if len(formats) != n:
            raise ValueError(f"need one format per output row ({n}), got {len(formats)}")
        old = self.formats or [None] * n
        changed = [i for i in range(n) if old[i] != formats[i]]
        rows = weight.detach().reshape(n, -1).double().cpu().numpy()
        with torch.no_grad():
            for fmt in {formats[i] for i in changed}:
                idx = [i for i in changed if formats[i] == fmt]
                a, _ = best_scale(rows[idx], numerics.weight_format(fmt))
                self.alpha[idx] = torch.as_tensor(a).to(self.alpha)
        self.formats = list(formats)
        self._groups = {
            fmt: torch.tensor([i for i, f in enumerate(formats) if f == fmt])
            for fmt in set(formats)
        }
        for fmt in self._groups:
            name = f"levels_{fmt.replace('-', '_')}"
            if not hasattr(self, name):
                self.register_buffer(name, _levels(fmt), persistent=False)
        return len(changed)

    def levels(self, fmt: str) -> torch.Tensor:
        """Integer level set of ``fmt`` as a float tensor."""
        return getattr(self, f"levels_{fmt.replace('-', '_')}")

    def integer(self, weight: torch.Tensor) -> torch.Tensor:
        """Integer levels of the weight (what the hardware stores), no gradient."""
        flat = weight.detach().reshape(weight.shape[0], -1)
        # Written row-wise into a fresh 2-D tensor: a reshape of empty_like(weight) is a copy
        # when the weight is not contiguous (e.g. channels-last strides after training), and
        # the rows written into that copy were lost, leaving uninitialised memory.
        out = torch.empty(flat.shape, dtype=weight.dtype, device=weight.device)
        for fmt, idx in self._groups.items():
            a = self.alpha.detach()[idx].abs().clamp_min(1e-12)[:, None]
            lv = self.levels(fmt)
            vc = torch.clamp(flat[idx] / a, float(lv[0]), float(lv[-1]))
            out[idx] = round_to_levels(vc, lv)
        return out.reshape(weight.shape)

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        n = weight.shape[0]
        flat = weight.reshape(n, -1)
        out = torch.empty_like(flat)
        for fmt, idx in self._groups.items():
            a = self.alpha[idx].abs().clamp_min(1e-12)[:, None]
            if self.scale_step_gradient:
                g = (flat.shape[1] * float(self.levels(fmt)[-1])) ** -0.5
                a = a * g + (a - a * g).detach()
            out[idx] = a * ste_levels(flat[idx] / a, self.levels(fmt))
        return out.reshape(weight.shape)


class ActQuantizer(nn.Module):
    """LSQ activation quantizer with a learnable step, initialised from the first batch."""

    def __init__(self, bits: int, signed: bool) -> None:
        super().__init__()
        if not 2 <= bits <= 8:
            raise ValueError(f"activation bits must be in [2, 8], got {bits}")
        self.bits, self.signed = bits, signed
        self.lo, self.hi = numerics.act_range(bits, signed)
        self.step = nn.Parameter(torch.tensor(1.0))
        self.register_buffer("initialized", torch.tensor(False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not bool(self.initialized):
            with torch.no_grad():
                m = x.detach().abs().flatten()
                top = torch.quantile(m[torch.randperm(len(m))[:100_000]], 0.999)
                self.step.fill_(float(top.clamp_min(1e-8)) / self.hi)
                self.initialized.fill_(True)
        s = self.step.abs().clamp_min(1e-8)
        g = 1.0 / (x[0].numel() * self.hi) ** 0.5
        s = s * g + (s - s * g).detach()
        v = torch.clamp(x / s, self.lo, self.hi)
        return s * (v + (torch.round(v) - v).detach())


def scale_step_gradients(model: nn.Module) -> int:
    """Turn on LSQ's gradient scale for every weight step of ``model``; returns how many
    quantizers it found (ValueError for none: the method quantizes no weights here)."""
    found = [m for m in model.modules() if isinstance(m, RowQuantizer)]
    if not found:
        raise ValueError("no row quantizer in the model: the step-gradient scale needs QAT weights")
    for m in found:
        m.scale_step_gradient = True
    return len(found)


STEP_INITS = ("mse", "absmax")
"""How a weight row's step starts: the MSE-optimal clip search (``assign.best_scale``, the
default) or the row's abs-max over its format's largest level (no clipping)."""


@torch.no_grad()
def init_steps_absmax(model: nn.Module) -> int:
    """Restart every weight step of ``model`` at its row's abs-max / max level (the ``absmax``
    step init, an ablation of the MSE-optimal start); returns how many quantizers it set."""
    found = [m for m in model.modules() if isinstance(getattr(m, "wq", None), RowQuantizer)]
    if not found:
        raise ValueError("no row quantizer in the model: the step init needs QAT weights")
    for m in found:
        rows = m.weight.detach().reshape(m.weight.shape[0], -1)
        top = torch.tensor([numerics.weight_format(f).max_level for f in m.wq.formats])
        amax = rows.abs().amax(1)
        m.wq.alpha.copy_(torch.where(amax > 0, amax / top.to(amax), torch.ones_like(amax)))
    return len(found)


@torch.no_grad()
def init_act_steps(model: nn.Module, x: torch.Tensor) -> int:
    """Initialise every not yet initialised activation step from a forward pass on ``x``.

    The same steps as the first training batch would give them, but before that batch: data
    parallel replicas must agree on them before DDP wraps the model. BatchNorm's running
    statistics are left as they were. Returns how many steps were initialised.
    """
    todo = [m for m in model.modules() if isinstance(m, ActQuantizer) and not bool(m.initialized)]
    if todo:
        norms = [
            m
            for m in model.modules()
            if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats
        ]
        saved = [(m.momentum, m.num_batches_tracked.clone()) for m in norms]
        for m in norms:
            m.momentum = 0.0
        model(x)
        for m, (momentum, tracked) in zip(norms, saved, strict=True):
            m.momentum = momentum
            m.num_batches_tracked.copy_(tracked)
    return len(todo)


class QConv2d(nn.Conv2d):
    """Conv2d with a quantized input and row-wise mixed-scheme weights."""

    def setup_quant(self, formats: list[str], act_bits: int, act_signed: bool) -> None:
        """Attach the quantizers (call once, after the float weights are loaded)."""
        self.wq = RowQuantizer(self.weight, formats)
        self.aq = ActQuantizer(act_bits, act_signed)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._conv_forward(self.aq(x), self.wq(self.weight), self.bias)


class QLinear(nn.Linear):
    """Linear with a quantized input and row-wise mixed-scheme weights."""

    def setup_quant(self, formats: list[str], act_bits: int, act_signed: bool) -> None:
        """Attach the quantizers (call once, after the float weights are loaded)."""
        self.wq = RowQuantizer(self.weight, formats)
        self.aq = ActQuantizer(act_bits, act_signed)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(self.aq(x), self.wq(self.weight), self.bias)


def to_qat(
    module: nn.Conv2d | nn.Linear, formats: list[str], act_bits: int, act_signed: bool
) -> QConv2d | QLinear:
    """A QConv2d/QLinear with ``module``'s parameters and the given quantizers."""
    module.__class__ = QConv2d if isinstance(module, nn.Conv2d) else QLinear
    module.setup_quant(formats, act_bits, act_signed)
    return module
