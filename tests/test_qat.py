"""QAT quantizers: level sets as documented, straight-through gradients, method presets."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F  # noqa: N812 - the conventional name
from torch import nn

from rmsmp.arch import numerics
from rmsmp.quant.assign import assign_rmsmp
from rmsmp.quant.methods import METHODS, method, prepare, reassign
from rmsmp.quant.qat import (
    ActQuantizer,
    RowQuantizer,
    init_act_steps,
    init_steps_absmax,
    round_to_levels,
    scale_step_gradients,
    ste_levels,
)
from rmsmp.quant.train import Distill, build, checkpoint, save_checkpoint, train

DOCUMENTED = {
    "fixed4": list(range(-7, 8)),
    "fixed8": list(range(-127, 128)),
    "pot4": [-64, -32, -16, -8, -4, -2, -1, 0, 1, 2, 4, 8, 16, 32, 64],
    "sp2-4": [-8, -6, -5, -4, -2, -1, 0, 1, 2, 4, 5, 6, 8],
}


def small_model() -> nn.Sequential:
    """conv 3->20, conv 20->40, linear: the middle layer is the one the ratio applies to."""
    return nn.Sequential(
        nn.Conv2d(3, 20, 3),
        nn.ReLU(),
        nn.Conv2d(20, 40, 3),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(40 * 4 * 4, 10),
    )


@pytest.mark.parametrize("fmt", sorted(DOCUMENTED))
def test_level_sets_are_as_documented(fmt: str) -> None:
    f = numerics.weight_format(fmt)
    assert f.levels().tolist() == DOCUMENTED[fmt]
    codes = np.arange(1 << f.bits)
    assert set(f.decode(codes).tolist()) >= set(DOCUMENTED[fmt])
    assert f.decode(f.encode(f.levels())).tolist() == DOCUMENTED[fmt]


@pytest.mark.parametrize("fmt", sorted(DOCUMENTED))
def test_fake_quant_weights_land_on_levels(fmt: str) -> None:
    torch.manual_seed(0)
    w = torch.randn(6, 40)
    rq = RowQuantizer(w, [fmt] * 6)
    q = rq(w) / rq.alpha.detach().abs()[:, None]
    assert torch.allclose(q, torch.round(q), atol=1e-4)
    assert set(torch.round(q).long().unique().tolist()) <= set(DOCUMENTED[fmt])
    assert torch.equal(rq.integer(w).long(), torch.round(q).long())


def test_rounding_picks_the_nearest_level() -> None:
    lv = torch.tensor(DOCUMENTED["pot4"], dtype=torch.float32)
    v = torch.empty(2000).uniform_(-70, 70)
    got = round_to_levels(v, lv)
    dist = (v[:, None] - lv[None]).abs()
    assert torch.allclose((v - got).abs(), dist.min(1).values)


def test_ste_passes_gradients_inside_the_range_only() -> None:
    lv = torch.tensor(DOCUMENTED["fixed4"], dtype=torch.float32)
    v = torch.tensor([-9.0, -3.4, 0.2, 6.6, 12.0], requires_grad=True)
    ste_levels(v, lv).sum().backward()
    assert v.grad.tolist() == [0.0, 1.0, 1.0, 1.0, 0.0]


def test_weight_and_scale_gradients_flow() -> None:
    torch.manual_seed(1)
    w = torch.randn(4, 10, requires_grad=True)
    rq = RowQuantizer(w, ["pot4", "fixed4", "sp2-4", "fixed8"])
    (rq(w) ** 2).sum().backward()
    assert w.grad is not None and bool((w.grad != 0).any())
    assert rq.alpha.grad is not None and bool((rq.alpha.grad != 0).all())


def test_activation_quantizer_levels_and_gradients() -> None:
    aq = ActQuantizer(4, signed=False)
    x = (torch.rand(8, 100) * 3).requires_grad_()
    y = aq(x)
    steps = (y / aq.step.detach()).detach()
    assert torch.allclose(steps, torch.round(steps), atol=1e-4)
    assert float(steps.min()) >= 0 and float(steps.max()) <= 15
    y.sum().backward()
    assert aq.step.grad is not None and float(aq.step.grad) != 0
    assert x.grad is not None and bool((x.grad != 0).any())


def test_presets_meet_their_ratio_and_keep_the_ends_8bit() -> None:
    torch.manual_seed(0)
    model = small_model()
    x = torch.randn(4, 3, 8, 8)
    assert set(METHODS) == {"fp32", "fixed4", "pot4", "sp2-4", "msq", "ilmpq", "rmsmp", "rmsmp-sp2"}
    rm = method("rmsmp")
    assign = prepare(model, rm, x)
    assert assign["0"] == ["fixed8"] * 20 and assign["5"] == ["fixed8"] * 10
    mid = assign["2"]
    assert (mid.count("pot4"), mid.count("fixed4"), mid.count("fixed8")) == (24, 14, 2)
    assert model[0].aq.signed and not model[2].aq.signed
    assert model(x).shape == (4, 10)
    with pytest.raises(ValueError, match="unknown method"):
        method("int3")


def test_a_method_at_a_preset_takes_the_presets_row_ratio() -> None:
    """rmsmp@pynq-z1 quantizes at the pynq-z1 array's rows; rmsmp-sp2 maps its shift rows onto
    the preset's PoT-4 rows; a board name means its default config, as everywhere; a non-mixed
    method or a missing format is refused by name."""
    from rmsmp.arch import PRESETS

    cfg = PRESETS["pynq-z1"]
    for name, shift in (("rmsmp", "pot4"), ("rmsmp-sp2", "sp2-4")):
        m = method(f"{name}@pynq-z1")
        assert m.name == f"{name}@pynq-z1" and m.act_bits == method(name).act_bits
        rows = {shift if g.fmt == "pot4" else g.fmt: g.rows for g in cfg.groups}
        assert m.ratio == {f: n / cfg.rows for f, n in rows.items()}
    m_ratio = method("rmsmp@pynq-z1").ratio
    torch.manual_seed(0)
    assign = prepare(small_model(), method("rmsmp@pynq-z1"), torch.randn(4, 3, 8, 8))
    mid = assign["2"]
    want = {g.fmt: 40 * g.rows / cfg.rows for g in cfg.groups}
    for fmt, n in want.items():
        assert abs(mid.count(fmt) - n) < 1
    with pytest.raises(ValueError, match="only mixed methods"):
        method("fixed4@pynq-z1")
    with pytest.raises(ValueError, match="pick a preset with the method's formats"):
        method("msq@pynq-z1")
    with pytest.raises(ValueError, match="unknown board or preset 'nope'"):
        method("rmsmp@nope")
    assert method("rmsmp@pynq-z2").ratio == m_ratio  # a board takes its default config's rows


def test_sensitivity_sends_the_most_sensitive_rows_to_8_bits() -> None:
    torch.manual_seed(0)
    model = small_model()
    sens = {"2": torch.zeros(40)}
    sens["2"][[7, 31]] = torch.tensor([5.0, 9.0])
    assign = prepare(model, method("rmsmp"), torch.randn(4, 3, 8, 8), sensitivity=sens)
    assert [i for i, f in enumerate(assign["2"]) if f == "fixed8"] == [7, 31]
    assert (assign["2"].count("pot4"), assign["2"].count("fixed4")) == (24, 14)


def test_reassignment_keeps_the_step_parameter_and_meets_the_ratio() -> None:
    torch.manual_seed(0)
    model = small_model()
    rm = method("rmsmp")
    before = prepare(model, rm, torch.randn(4, 3, 8, 8))
    alpha = model[2].wq.alpha
    with torch.no_grad():
        model[2].weight[before["2"].index("pot4")] *= torch.linspace(-3, 3, 180).view(20, 3, 3)
    after = reassign(model, rm)
    assert model[2].wq.alpha is alpha
    assert after["0"] == before["0"] and after["5"] == before["5"]
    assert (after["2"].count("pot4"), after["2"].count("fixed4"), after["2"].count("fixed8")) == (
        24,
        14,
        2,
    )
    assert after["2"] != before["2"]
    assert model[2].wq.formats == after["2"]


def test_init_act_steps_matches_the_first_forward_and_keeps_bn_statistics() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 4, 3))
    x = torch.randn(6, 3, 8, 8)
    prepare(model, method("fixed4"), x)
    twin = copy.deepcopy(model)
    model.train()
    twin.train()
    bn = {k: v.clone() for k, v in model[1].state_dict().items()}
    torch.manual_seed(1)
    assert init_act_steps(model, x) == 2
    torch.manual_seed(1)
    twin(x)
    assert model[0].aq.step.item() == twin[0].aq.step.item()
    assert model[3].aq.step.item() == twin[3].aq.step.item()
    assert all(torch.equal(v, model[1].state_dict()[k]) for k, v in bn.items())
    assert not torch.equal(bn["running_mean"], twin[1].running_mean)
    assert init_act_steps(model, x) == 0


def test_distillation_loss_is_ce_plus_softened_kl() -> None:
    torch.manual_seed(0)
    s = torch.randn(5, 10, requires_grad=True)
    t = torch.randn(5, 10)
    y = torch.randint(0, 10, (5,))
    ce = F.cross_entropy(s, y)
    assert float(Distill(weight=0.3).loss(s, s.detach(), y)) == pytest.approx(0.7 * float(ce))
    temp = 3.0
    Distill(weight=1.0, temperature=temp).loss(s, t, y).backward()
    want = temp * (F.softmax(s / temp, 1) - F.softmax(t / temp, 1)) / len(s)
    assert torch.allclose(s.grad, want.detach(), atol=1e-6)
    with pytest.raises(ValueError, match="weight"):
        Distill(weight=0.0)
    with pytest.raises(ValueError, match="temperature"):
        Distill(temperature=-1.0)


def test_variance_rule_gives_pot_to_the_rows_most_concentrated_near_zero() -> None:
    torch.manual_seed(0)
    model = small_model()
    with torch.no_grad():  # rows 0-19 peaked (Laplace-like), rows 20-39 uniform
        w = model[2].weight
        w[:20] = torch.distributions.Laplace(0.0, 0.05).sample(w[:20].shape)
        w[20:] = torch.empty_like(w[20:]).uniform_(-0.2, 0.2)
    assign = prepare(model, method("rmsmp"), torch.randn(4, 3, 8, 8), split_rule="variance")
    mid = assign["2"]
    assert (mid.count("pot4"), mid.count("fixed4"), mid.count("fixed8")) == (24, 14, 2)
    assert all(f in ("pot4", "fixed8") for f in mid[:20])
    rows = model[2].weight.detach().reshape(40, -1).double().numpy()
    assert mid == assign_rmsmp(rows, method("rmsmp").ratio, split_rule="variance")


def test_step_gradient_scale_scales_only_the_step_gradient() -> None:
    torch.manual_seed(2)
    w = torch.randn(3, 12)
    grads, outs = [], []
    for scaled in (False, True):
        rq = RowQuantizer(w, ["pot4", "fixed4", "fixed8"])
        if scaled:
            assert scale_step_gradients(nn.Sequential(rq)) == 1
        wi = w.clone().requires_grad_()
        out = rq(wi)
        (out * torch.arange(36.0).view(3, 12)).sum().backward()
        grads.append((rq.alpha.grad.clone(), wi.grad.clone()))
        outs.append(out.detach())
    assert torch.equal(outs[0], outs[1])
    assert torch.equal(grads[0][1], grads[1][1])
    g = torch.tensor([(12 * 64) ** -0.5, (12 * 7) ** -0.5, (12 * 127) ** -0.5])
    assert torch.allclose(grads[1][0], grads[0][0] * g, rtol=1e-5)
    with pytest.raises(ValueError, match="no row quantizer"):
        scale_step_gradients(nn.Linear(2, 2))


def test_absmax_step_init_puts_each_rows_largest_weight_on_the_top_level() -> None:
    torch.manual_seed(3)
    model = small_model()
    assign = prepare(model, method("rmsmp"), torch.randn(4, 3, 8, 8))
    mse = model[2].wq.alpha.detach().clone()
    assert init_steps_absmax(model) == 3
    rows = model[2].weight.detach().reshape(40, -1)
    top = torch.tensor([float(numerics.weight_format(f).max_level) for f in assign["2"]])
    alpha = model[2].wq.alpha.detach()
    assert torch.allclose(alpha, rows.abs().amax(1) / top)
    # no weight is clipped, and the MSE-optimal start clips (a smaller step) on some rows
    q = model[2].wq.integer(model[2].weight).reshape(40, -1)
    assert torch.equal(q.abs().amax(1), top)
    assert bool((mse < alpha * (1 - 1e-6)).any()) and bool((mse <= alpha * (1 + 1e-6)).all())
    with pytest.raises(ValueError, match="no row quantizer"):
        init_steps_absmax(nn.Linear(2, 2))
    with pytest.raises(ValueError, match="step init must be one of mse, absmax, got 'max'"):
        train("resnet20", "rmsmp", 1, "unused.pt", step_init="max")


def test_a_run_resumes_only_with_its_seed(tmp_path) -> None:
    model, assignment = build("resnet20", "fixed4")
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, 0.01, total_steps=1)
    out = tmp_path / "r.pt"
    extra = {"kd": None, "step_grad_scale": True, "step_init": "mse", "seed": 1}
    save_checkpoint(
        checkpoint("resnet20", "fixed4", 1, 1, assignment, model, opt, sched, [], **extra), out
    )
    with pytest.raises(ValueError, match=r"step init and seed .*, 1\), not .*, 0\)"):
        train("resnet20", "fixed4", 1, out, seed=0)
