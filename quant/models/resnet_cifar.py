"""ResNet-20 for CIFAR-10 (He et al. 2016, CIFAR variant, option-A shortcuts).

Parameter names match the pretrained akamaster/pytorch_resnet_cifar10 checkpoint in the shared
data directory, so it loads with ``load_state_dict(strict=True)``.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F  # noqa: N812
from torch import nn

from ..data import shared_data_dir

CHECKPOINT = "resnet20_cifar10/resnet20-12fca82f.th"


def _conv3x3(cin: int, cout: int, stride: int) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)


class BasicBlock(nn.Module):
    """conv3x3-bn-relu-conv3x3-bn, plus the shortcut, then relu."""

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = _conv3x3(in_planes, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = _conv3x3(planes, planes, 1)
        self.bn2 = nn.BatchNorm2d(planes)
        self.pad = planes // 4 if stride != 1 or in_planes != planes else 0
        self.downsample = stride != 1 or in_planes != planes
        self.quant_in = nn.Identity()

    def share_input_quantizer(self) -> None:
        """Quantize the block input once, for conv1 and the shortcut alike (QAT only).

        The integer form of the block then adds the shortcut on conv1's input grid, exactly.
        """
        self.quant_in, self.conv1.aq = self.conv1.aq, nn.Identity()

    def shortcut(self, x: torch.Tensor) -> torch.Tensor:
        """Option A: identity, or subsample by 2 and zero-pad planes//4 channels on each side."""
        if not self.downsample:
            return x
        return F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, self.pad, self.pad))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.quant_in(x)
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class ResNetCifar(nn.Module):
    """conv1-bn1-relu, three stages of BasicBlocks (16/32/64 channels), global avg pool, linear."""

    def __init__(self, num_blocks: tuple[int, int, int], num_classes: int = 10) -> None:
        super().__init__()
        self.conv1 = _conv3x3(3, 16, 1)
        self.bn1 = nn.BatchNorm2d(16)
        in_planes = 16
        stages = []
        for planes, blocks, stride in zip((16, 32, 64), num_blocks, (1, 2, 2), strict=True):
            layers = []
            for s in [stride] + [1] * (blocks - 1):
                layers.append(BasicBlock(in_planes, planes, s))
                in_planes = planes
            stages.append(nn.Sequential(*layers))
        self.layer1, self.layer2, self.layer3 = stages
        self.linear = nn.Linear(64, num_classes)
        self.quant_out = nn.Identity()

    def attach_output_quantizer(self, q: nn.Module) -> None:
        """Quantize the last block's output before pooling (QAT only), as the hardware would."""
        self.quant_out = q

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.quant_out(self.layer3(self.layer2(self.layer1(out))))
        out = F.adaptive_avg_pool2d(out, 1).flatten(1)
        return self.linear(out)


def resnet20(num_classes: int = 10) -> ResNetCifar:
    """An untrained ResNet-20 (3 BasicBlocks per stage)."""
    return ResNetCifar((3, 3, 3), num_classes)


def default_checkpoint() -> Path:
    """The shared pretrained checkpoint (``$RMSMP_SHARED_DATA`` overrides the data dir)."""
    return shared_data_dir() / CHECKPOINT


def load_resnet20(path: str | Path | None = None) -> nn.Module:
    """ResNet-20 with the pretrained CIFAR-10 weights (91.78% on the original test set), in eval."""
    path = Path(path) if path is not None else default_checkpoint()
    if not path.is_file():
        raise FileNotFoundError(
            f"ResNet-20 checkpoint not found at {path}; put resnet20-12fca82f.th there, pass its "
            "path, or set RMSMP_SHARED_DATA to the directory holding " + CHECKPOINT
        )
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    state = ckpt.get("state_dict", ckpt)
    state = {k.removeprefix("module."): v for k, v in state.items()}
    model = resnet20()
    model.load_state_dict(state)
    return model.eval()
