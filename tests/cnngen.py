"""Random residual CNNs (BasicBlocks with identity, 1x1-conv or option-A shortcuts, Bottlenecks,
max pools, global average pools, Linear heads, random BN statistics) for capture and lowering."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812
from bnstats import randomize_bn
from torch import nn

ADDS = ("iadd", "plus", "torch.add")


def _add(out: torch.Tensor, identity: torch.Tensor, how: str) -> torch.Tensor:
    if how == "iadd":
        out += identity
        return out
    return out + identity if how == "plus" else torch.add(out, identity)


class Basic(nn.Module):
    """A BasicBlock; shortcut identity, 1x1 conv + BN, or option A (subsample, pad channels)."""

    def __init__(self, cin: int, cout: int, stride: int, shortcut: str, add: str) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.act = nn.ReLU()
        self.down = None
        if shortcut == "conv":
            self.down = nn.Sequential(
                nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout)
            )
        self.option_a, self.stride, self.pad = shortcut == "a", stride, (cout - cin) // 2
        self.how = add

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        if self.down is not None:
            identity = self.down(x)
        elif self.option_a:
            identity = F.pad(
                x[:, :, :: self.stride, :: self.stride], (0, 0, 0, 0, self.pad, self.pad)
            )
        else:
            identity = x
        return self.act(_add(out, identity, self.how))


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3 (strided), 1x1 expand, with a 1x1 projection shortcut, ReLU6 after add."""

    def __init__(self, cin: int, mid: int, stride: int, add: str) -> None:
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(cin, mid, 1, bias=False), nn.BatchNorm2d(mid)
        self.conv2, self.bn2 = nn.Conv2d(mid, mid, 3, stride, 1, bias=False), nn.BatchNorm2d(mid)
        self.conv3, self.bn3 = nn.Conv2d(mid, 2 * mid, 1, bias=False), nn.BatchNorm2d(2 * mid)
        self.downsample = nn.Sequential(
            nn.Conv2d(cin, 2 * mid, 1, stride, bias=False), nn.BatchNorm2d(2 * mid)
        )
        self.how = add

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = self.downsample(x)
        out = F.relu(self.bn1(self.conv1(x)))
        out = torch.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return F.relu6(_add(out, identity, self.how))


class Net(nn.Module):
    """Stem conv-BN-ReLU, optional max pool, residual blocks, a pool, a flatten, a Linear head."""

    def __init__(self, rng: np.random.Generator, cin: int) -> None:
        super().__init__()
        c = int(rng.integers(3, 9))
        self.stem = nn.Sequential(nn.Conv2d(cin, c, 3, 1, 1), nn.BatchNorm2d(c), nn.ReLU())
        self.pool = [nn.Identity(), nn.MaxPool2d(2), nn.MaxPool2d(3, 2, 1)][rng.integers(0, 3)]
        blocks: list[nn.Module] = []
        for _ in range(int(rng.integers(1, 4))):
            add = ADDS[rng.integers(0, 3)]
            if rng.random() < 0.2:
                mid = int(rng.integers(2, 6))
                blocks.append(Bottleneck(c, mid, int(rng.integers(1, 3)), add))
                c = 2 * mid
                continue
            kind = ["identity", "conv", "a"][rng.integers(0, 3)]
            stride, cout = (1, c) if kind == "identity" else (int(rng.integers(1, 3)), 2 * c)
            if kind == "a":  # channels padded equally on both sides
                cout = c + 2 * max(1, c // 2)
            blocks.append(Basic(c, cout, stride, kind, add))
            c = cout
        self.blocks = nn.Sequential(*blocks)
        self.gap = rng.integers(0, 3)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.flat = rng.integers(0, 3)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(c, int(rng.integers(2, 11)))
        for m in self.modules():
            if isinstance(m, nn.BatchNorm2d):
                randomize_bn(m, rng)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.blocks(self.pool(self.stem(x)))
        if self.gap == 0:
            x = F.adaptive_avg_pool2d(x, 1)
        elif self.gap == 1:
            x = self.avgpool(x)
        else:
            x = F.adaptive_avg_pool2d(F.avg_pool2d(x, 2), 1)
        if self.flat == 0:
            return self.fc(torch.flatten(x, 1))
        if self.flat == 1:
            return self.fc(self.flatten(x))
        return self.fc(x.view(x.size(0), -1))
