"""Torch helpers shared by the quantization tests."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn


def randomize_bn(bn: nn.Module, rng: np.random.Generator) -> None:
    """Give a BatchNorm random affine parameters and running statistics (folding must use them)."""
    n = bn.num_features
    with torch.no_grad():
        bn.weight.copy_(torch.from_numpy(rng.uniform(0.3, 2.0, n)))
        bn.bias.copy_(torch.from_numpy(rng.normal(0, 0.5, n)))
        bn.running_mean.copy_(torch.from_numpy(rng.normal(0, 0.5, n)))
        bn.running_var.copy_(torch.from_numpy(rng.uniform(0.2, 3.0, n)))
