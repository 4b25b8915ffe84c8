"""The Brevitas Int4 per-channel peer baseline: really 4-bit, trainable, same model and data."""

from __future__ import annotations

import numpy as np
import torch

from rmsmp.quant.brevitas_baseline import brevitas_resnet20
from rmsmp.quant.train import BREVITAS, BREVITAS_INT_RESIDUAL, batches, build


def test_brevitas_baseline_is_int4_per_channel_and_trains() -> None:
    model, assignment = build("resnet20", BREVITAS)
    assert assignment == {}
    qconvs = [m for m in model.modules() if type(m).__name__ == "QuantConv2d"]
    assert len(qconvs) == 18
    for conv in qconvs:
        w = conv.quant_weight().value.detach()
        scale = conv.quant_weight().scale.detach()
        ints = torch.round(w / scale)
        assert torch.allclose(w / scale, ints, atol=1e-3)
        assert int(ints.abs().max()) <= 8
        assert scale.reshape(-1).numel() == conv.out_channels
    model.train()
    x, y = next(batches("train", 16, True, np.random.default_rng(0)))
    loss = torch.nn.functional.cross_entropy(model(x), y)
    loss.backward()
    assert all(c.weight.grad is not None and bool((c.weight.grad != 0).any()) for c in qconvs)


def test_brevitas_8ends_quantizes_the_ends_to_8_bits_like_ours() -> None:
    model = brevitas_resnet20(eight_bit_ends=True).eval()
    assert len([m for m in model.modules() if type(m).__name__ == "QuantConv2d"]) == 19
    for layer in (model.conv1[1], model.linear[1]):
        qw = layer.quant_weight()
        ints = qw.value.detach() / qw.scale.detach()
        assert torch.allclose(ints, torch.round(ints), atol=1e-3)
        assert 15 < int(ints.abs().max()) <= 128
        assert qw.scale.reshape(-1).numel() == layer.weight.shape[0]
    assert float(model.conv1[0].act_quant.bit_width()) == 8 and model.conv1[0].act_quant.is_signed
    assert float(model.linear[0].act_quant.bit_width()) == 7
    assert float(model.quant_out.act_quant.bit_width()) == 4
    x, _ = next(batches("train", 4, False, np.random.default_rng(0)))
    assert len(torch.unique(model.conv1[0](x))) <= 256
    assert model(x).shape == (4, 10)


def test_brevitas_integer_residual_quantizes_the_shortcut_like_ours() -> None:
    """brevitas-8ends-intres: every block adds its 4-bit-quantized input, not the float one."""
    model, _ = build("resnet20", BREVITAS_INT_RESIDUAL)
    blocks = [b for stage in (model.layer1, model.layer2, model.layer3) for b in stage]
    seen = []
    for block in blocks:
        assert type(block.conv1).__name__ == "QuantConv2d"  # its input is quant_in's output
        assert float(block.quant_in.act_quant.bit_width()) == 4
        block.shortcut = lambda x, add=block.shortcut: seen.append(x) or add(x)
    x, _ = next(batches("train", 4, False, np.random.default_rng(0)))
    model(x)
    assert len(seen) == len(blocks)
    for block, r in zip(blocks, seen, strict=True):
        scale = float(block.quant_in.act_quant.scale())
        assert len(torch.unique(r)) <= 16
        assert torch.allclose(r / scale, torch.round(r / scale), atol=1e-3)
