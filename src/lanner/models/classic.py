"""Classic small CNNs by name, for CPUs and teaching: ``shallownet``, ``lenet``, ``minivggnet``,
``minigooglenet`` and ``cifar_resnet20``, registered in the ``classify`` namespace beside timm's.

They follow the textbook versions (LeNet-5 as in Keras tutorials, MiniVGGNet and MiniGoogLeNet as
in "Deep Learning for Computer Vision with Python", ResNet-20 of He et al. 2015 for CIFAR), with one
change: the nets that flatten a feature map into a dense layer pool it to a fixed grid first
(``AdaptiveAvgPool2d``; the identity at their native 28/32 px), so any ``--image-size`` trains.

Each net has timm's classifier interface (``forward_features``, ``forward_head``,
``get_classifier``, ``reset_classifier``, ``num_features``, ``feature_info``), so freezing
(``--freeze backbone``, ``stages:K``), class surgery, linear probes and export treat them as timm
models. Blocks are top-level children (``stem``, ``stage1``, ...), which ``lanner models NAME`` lists.
"""

from __future__ import annotations

import torch
from torch import nn

from lanner.models.registry import register_model

NATIVE_SIZE = 32  # the CIFAR-sized inputs these nets were designed for (LeNet's 28 px also fits)
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


class ClassicNet(nn.Module):
    """Named stages (the feature extractor), a pre-logits block and a linear classifier ``fc``."""

    def __init__(self, stages: dict[str, nn.Module], pre_logits: nn.Module, num_features: int,
                 num_classes: int) -> None:  # fmt: skip
        super().__init__()
        for name, stage in stages.items():
            self.add_module(name, stage)
        self.stage_names = list(stages)
        self.pre_logits = pre_logits
        self.num_features = num_features
        self.fc = nn.Linear(num_features, num_classes)
        # timm's feature_info: the stage modules, stem first (``--freeze stages:K`` reads it)
        self.feature_info = [{"module": name} for name in self.stage_names]
        # what timm's resolve_data_config reads: the native input size, ImageNet's mean and std
        self.pretrained_cfg = {"input_size": (3, NATIVE_SIZE, NATIVE_SIZE), "mean": MEAN, "std": STD}

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        for name in self.stage_names:
            x = getattr(self, name)(x)
        return x

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.pre_logits(x)  # [B, num_features]
        return x if pre_logits else self.fc(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def get_classifier(self) -> nn.Module:
        return self.fc

    def reset_classifier(self, num_classes: int) -> None:
        self.fc = nn.Linear(self.num_features, num_classes)


def _conv(cin: int, cout: int, k: int = 3, stride: int = 1, padding: int | None = None) -> nn.Sequential:
    """Conv, BatchNorm, ReLU ("same" padding unless told)."""
    pad = k // 2 if padding is None else padding
    return nn.Sequential(
        nn.Conv2d(cin, cout, k, stride, pad, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)
    )


def _flatten_to(grid: int) -> list[nn.Module]:
    return [nn.AdaptiveAvgPool2d(grid), nn.Flatten()]


# ------------------------------------------------------------------------------------- ShallowNet
@register_model("classify", "shallownet")
def shallownet(*, num_classes: int, **_) -> ClassicNet:
    """One 3x3 conv of 32 filters and a dense layer (at 32 px: 32x32x32 pooled to 8x8)."""
    stem = nn.Sequential(nn.Conv2d(3, 32, 3, padding=1), nn.ReLU(inplace=True))
    return ClassicNet({"stem": stem}, nn.Sequential(*_flatten_to(8)), 32 * 8 * 8, num_classes)


# ------------------------------------------------------------------------------------------ LeNet
@register_model("classify", "lenet")
def lenet(*, num_classes: int, **_) -> ClassicNet:
    """LeNet-5 (20 and 50 5x5 filters, tanh replaced by ReLU, 500 hidden units); native 28 px."""
    stages = {
        "stage1": nn.Sequential(nn.Conv2d(3, 20, 5, padding=2), nn.ReLU(inplace=True), nn.MaxPool2d(2)),
        "stage2": nn.Sequential(nn.Conv2d(20, 50, 5, padding=2), nn.ReLU(inplace=True), nn.MaxPool2d(2)),
    }
    head = nn.Sequential(*_flatten_to(7), nn.Linear(50 * 7 * 7, 500), nn.ReLU(inplace=True))
    return ClassicNet(stages, head, 500, num_classes)


# ------------------------------------------------------------------------------------- MiniVGGNet
def _vgg_stage(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(_conv(cin, cout), _conv(cout, cout), nn.MaxPool2d(2), nn.Dropout(0.25))


@register_model("classify", "minivggnet")
def minivggnet(*, num_classes: int, **_) -> ClassicNet:
    """Two VGG stages (32, 64 filters, BatchNorm, dropout) and a 512-unit dense layer; native 32 px."""
    stages = {"stage1": _vgg_stage(3, 32), "stage2": _vgg_stage(32, 64)}
    head = nn.Sequential(
        *_flatten_to(8), nn.Linear(64 * 8 * 8, 512), nn.BatchNorm1d(512), nn.ReLU(inplace=True),
        nn.Dropout(0.5),
    )  # fmt: skip
    return ClassicNet(stages, head, 512, num_classes)


# ---------------------------------------------------------------------------------- MiniGoogLeNet
class _Inception(nn.Module):
    """A 1x1 and a 3x3 branch, concatenated along channels."""

    def __init__(self, cin: int, k1: int, k3: int) -> None:
        super().__init__()
        self.branch1, self.branch3 = _conv(cin, k1, 1), _conv(cin, k3, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.branch1(x), self.branch3(x)], dim=1)  # [B, k1 + k3, H, W]


class _Downsample(nn.Module):
    """A stride-2 3x3 conv beside a stride-2 max pool, concatenated (halves H and W)."""

    def __init__(self, cin: int, k: int) -> None:
        super().__init__()
        self.conv, self.pool = _conv(cin, k, 3, 2, 1), nn.MaxPool2d(3, 2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.conv(x), self.pool(x)], dim=1)  # [B, k + cin, H/2, W/2]


@register_model("classify", "minigooglenet")
def minigooglenet(*, num_classes: int, **_) -> ClassicNet:
    """Zhang et al.'s small Inception net for CIFAR (1.65 M parameters at 10 classes); native 32 px."""
    stages = {
        "stem": _conv(3, 96),
        "stage1": nn.Sequential(_Inception(96, 32, 32), _Inception(64, 32, 48), _Downsample(80, 80)),
        "stage2": nn.Sequential(
            _Inception(160, 112, 48),
            _Inception(160, 96, 64),
            _Inception(160, 80, 80),
            _Inception(160, 48, 96),
            _Downsample(144, 96),
        ),  # fmt: skip
        "stage3": nn.Sequential(_Inception(240, 176, 160), _Inception(336, 176, 160)),
    }
    head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(0.5))
    return ClassicNet(stages, head, 336, num_classes)


# ---------------------------------------------------------------------------------- CIFAR ResNet
class _BasicBlock(nn.Module):
    """Two 3x3 convs and an identity (or 1x1 projection when the shape changes) shortcut."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = _conv(cin, cout, 3, stride)
        self.conv2 = nn.Sequential(nn.Conv2d(cout, cout, 3, 1, 1, bias=False), nn.BatchNorm2d(cout))
        self.shortcut = nn.Identity()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.conv2(self.conv1(x)) + self.shortcut(x))


def _res_stage(cin: int, cout: int, blocks: int, stride: int) -> nn.Sequential:
    return nn.Sequential(*[_BasicBlock(cin if i == 0 else cout, cout, stride if i == 0 else 1)
                           for i in range(blocks)])  # fmt: skip


@register_model("classify", "cifar_resnet20")
def cifar_resnet20(*, num_classes: int, **_) -> ClassicNet:
    """He et al.'s ResNet-20 for 32 px images: 3 stages of 3 basic blocks, 16/32/64 channels (0.27 M)."""
    stages = {
        "stem": _conv(3, 16),
        "stage1": _res_stage(16, 16, 3, 1),
        "stage2": _res_stage(16, 32, 3, 2),
        "stage3": _res_stage(32, 64, 3, 2),
    }
    return ClassicNet(stages, nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten()), 64, num_classes)


CLASSIC_MODELS = ("shallownet", "lenet", "minivggnet", "minigooglenet", "cifar_resnet20")
