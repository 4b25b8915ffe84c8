"""The Brevitas Int4 per-channel peer baseline: really 4-bit, trainable, same model and data."""

from __future__ import annotations

import numpy as np
import torch

from rmsmp.compiler.train import BREVITAS, batches, build


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
