"""Peer baseline: Brevitas Int4 per-channel weight QAT (4-bit unsigned activations) on ResNet-20.

Every Conv2d of the residual blocks becomes a ``brevitas.nn.QuantConv2d`` with 4-bit
per-output-channel float-scaled weights, fed by a 4-bit unsigned ``QuantIdentity`` (its inputs
follow a ReLU). The ends are either float (the usual Brevitas recipe) or, like-for-like with our
methods, 8-bit: the first conv with 8-bit per-channel weights on a signed 8-bit image, the
classifier with 8-bit per-channel weights on an unsigned 7-bit pooled input (ours store
activations as signed 8-bit, so an unsigned end input gets 7 bits), and the last feature map
quantized to 4 bits before pooling, as ours is. Scales stay float either way (ours
become dyadic at export). Brevitas is an optional extra (``pip install 'rmsmp[brevitas]'``).
"""

from __future__ import annotations

from torch import nn

from .models.resnet_cifar import load_resnet20

WEIGHT_BITS = 4
ACT_BITS = 4
END_BITS = 8
UNSIGNED_END_BITS = 7


def _require_brevitas():
    try:
        import brevitas.nn as qnn
        from brevitas.quant import (
            Int8ActPerTensorFloat,
            Int8WeightPerChannelFloat,
            Uint8ActPerTensorFloat,
        )
    except ImportError:
        raise ImportError(
            "the Brevitas baseline needs brevitas: pip install 'rmsmp[brevitas]'"
        ) from None
    return qnn, Int8WeightPerChannelFloat, Uint8ActPerTensorFloat, Int8ActPerTensorFloat


def _quant_conv(conv: nn.Conv2d, bits: int) -> nn.Module:
    qnn, wq, _, _ = _require_brevitas()
    qconv = qnn.QuantConv2d(
        conv.in_channels,
        conv.out_channels,
        conv.kernel_size,
        stride=conv.stride,
        padding=conv.padding,
        bias=False,
        weight_quant=wq,
        weight_bit_width=bits,
    )
    qconv.weight.data.copy_(conv.weight.data)
    return qconv


def brevitas_resnet20(eight_bit_ends: bool = False, integer_residual: bool = False) -> nn.Module:
    """The pretrained ResNet-20 with its block convs replaced by Brevitas Int4 layers.

    ``eight_bit_ends`` also quantizes the first conv and the classifier to 8-bit weights, their
    inputs to 8 (signed image) and 7 bits (unsigned pooled map), and the last feature map to 4
    bits, as our methods do; otherwise they stay float. Brevitas' usual recipe quantizes conv
    inputs only, so the shortcut adds the block's float input; ``integer_residual`` quantizes
    the block input once for conv1 and the shortcut alike, as ours (and an integer accelerator)
    must.
    """
    qnn, wq, uact, sact = _require_brevitas()
    model = load_resnet20()
    for block in (b for stage in (model.layer1, model.layer2, model.layer3) for b in stage):
        for name in ("conv1", "conv2"):
            act = qnn.QuantIdentity(act_quant=uact, bit_width=ACT_BITS, return_quant_tensor=False)
            qconv = _quant_conv(getattr(block, name), WEIGHT_BITS)
            if name == "conv1" and integer_residual:
                block.quant_in, block.conv1 = act, qconv
            else:
                setattr(block, name, nn.Sequential(act, qconv))
    if eight_bit_ends:
        image = qnn.QuantIdentity(act_quant=sact, bit_width=END_BITS, return_quant_tensor=False)
        model.conv1 = nn.Sequential(image, _quant_conv(model.conv1, END_BITS))
        linear = qnn.QuantLinear(
            model.linear.in_features,
            model.linear.out_features,
            bias=True,
            weight_quant=wq,
            weight_bit_width=END_BITS,
        )
        linear.weight.data.copy_(model.linear.weight.data)
        linear.bias.data.copy_(model.linear.bias.data)
        pooled = qnn.QuantIdentity(
            act_quant=uact, bit_width=UNSIGNED_END_BITS, return_quant_tensor=False
        )
        model.linear = nn.Sequential(pooled, linear)
        model.attach_output_quantizer(
            qnn.QuantIdentity(act_quant=uact, bit_width=ACT_BITS, return_quant_tensor=False)
        )
    return model
