"""Peer baseline: Brevitas Int4 per-channel weight QAT (4-bit unsigned activations) on ResNet-20.

Every Conv2d but the first becomes a ``brevitas.nn.QuantConv2d`` with 4-bit per-output-channel
float-scaled weights, fed by a 4-bit unsigned ``QuantIdentity`` (its inputs follow a ReLU); the
first conv and the classifier stay float, as our methods keep them at 8 bits. Brevitas is an
optional extra (``pip install 'rmsmp[brevitas]'``).
"""

from __future__ import annotations

from torch import nn

from .models.resnet_cifar import load_resnet20

WEIGHT_BITS = 4
ACT_BITS = 4


def _require_brevitas():
    try:
        import brevitas.nn as qnn
        from brevitas.quant import Int8WeightPerChannelFloat, Uint8ActPerTensorFloat
    except ImportError:
        raise ImportError(
            "the Brevitas baseline needs brevitas: pip install 'rmsmp[brevitas]'"
        ) from None
    return qnn, Int8WeightPerChannelFloat, Uint8ActPerTensorFloat


def brevitas_resnet20() -> nn.Module:
    """The pretrained ResNet-20 with its inner convs replaced by Brevitas Int4 layers."""
    qnn, wq, aq = _require_brevitas()
    model = load_resnet20()
    for block in (b for stage in (model.layer1, model.layer2, model.layer3) for b in stage):
        for name in ("conv1", "conv2"):
            conv: nn.Conv2d = getattr(block, name)
            qconv = qnn.QuantConv2d(
                conv.in_channels,
                conv.out_channels,
                conv.kernel_size,
                stride=conv.stride,
                padding=conv.padding,
                bias=False,
                weight_quant=wq,
                weight_bit_width=WEIGHT_BITS,
            )
            qconv.weight.data.copy_(conv.weight.data)
            act = qnn.QuantIdentity(act_quant=aq, bit_width=ACT_BITS, return_quant_tensor=False)
            setattr(block, name, nn.Sequential(act, qconv))
    return model
