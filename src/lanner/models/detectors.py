"""Detectors for ``--task detect``: torchvision architectures on timm or torchvision backbones.

Every builder takes ``num_classes`` (the dataset's classes, no background) and ``image_size`` and
returns a torchvision-style detector: ``model(list of [3, H, W] floats in 0..1, targets)`` gives a
loss dict in train mode and ``[{"boxes", "scores", "labels"}]`` in eval mode. Images reach the
model already letterboxed to ``image_size`` (see :mod:`lanner.data.box_transforms`), so the
model's own transform is set to a no-op resize and only normalises.

Architectures whose class 0 means background (Faster R-CNN, SSD) get ``label_offset = 1``: the
task adds it to targets and subtracts it from outputs, so lanner's labels are always 0..C-1.

Weights always start random (``weights=None, weights_backbone=None``); ``--pretrained`` loads
ImageNet weights into a timm backbone (``TimmFPN.timm_name``) or torchvision's COCO weights into a
torchvision detector (``model.torchvision_builder``) afterwards, see :mod:`lanner.models.transfer`.
Their normalisation is ImageNet's unless the backbone's pretrained weights say otherwise (timm's
pretrained config; :func:`set_normalization`, recorded as the checkpoint's ``normalize``).
The ``fcos_<backbone>`` family is lanner's compact one-stage detector: a timm ``features_only``
backbone (strides 8, 16, 32), a narrow FPN and a 2-conv GroupNorm FCOS head. GroupNorm in the head
because the head's statistics are pooled over few images per batch on a CPU; the backbone keeps
BatchNorm, which sees batch x H x W positions per channel and trains faster from scratch.

Why it is the CPU default (2 cores, fp32, batch 8, one training step, quiet machine): torchvision's
own FCOS (MobileNetV3-large FPN, 256-channel 4-conv heads) trains at 3.1 img/s at 416 px, Faster
R-CNN MobileNetV3 at 0.9 img/s; ``fcos_resnet18`` with a 96-channel FPN and 2-conv heads trains at
8.5 img/s at 320 px (5.7 at 384). Depthwise and grouped backbones (mobilenetv3, regnetx) are ~6x
slower to *train* on CPU than their FLOPs suggest, so a plain ResNet-18 wins. On rbc_roboflow_coco
from scratch it reaches val mAP@.5 0.56 / 0.65 / 0.78 after 1 / 2 / 3 epochs at 320 px.
"""

from __future__ import annotations

from collections import OrderedDict
from functools import partial

import torch
from torch import nn
from torchvision.models.detection import FCOS
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.fcos import FCOSHead
from torchvision.ops import FeaturePyramidNetwork

from lanner.models.registry import register_model

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
FCOS_STRIDES = (8, 16, 32)
FEATURE_INDICES = (2, 3, 4)  # timm feature levels at strides 8, 16, 32


class TimmFPN(nn.Module):
    """timm backbone features at strides 8/16/32 -> FPN maps, all with ``out_channels`` channels."""

    def __init__(self, backbone: str, out_channels: int) -> None:
        super().__init__()
        import timm

        self.timm_name = backbone  # whose ImageNet weights fit (lanner.models.transfer)
        self.timm_kwargs = {"features_only": True, "out_indices": FEATURE_INDICES}
        self.body = timm.create_model(backbone, pretrained=False, **self.timm_kwargs)
        reductions = self.body.feature_info.reduction()
        if tuple(reductions) != FCOS_STRIDES:
            raise ValueError(f"{backbone}: feature strides {reductions}, need {FCOS_STRIDES}")
        self.fpn = FeaturePyramidNetwork(self.body.feature_info.channels(), out_channels)
        self.out_channels = out_channels

    def forward(self, x: torch.Tensor) -> OrderedDict[str, torch.Tensor]:
        feats = self.body(x)  # [B, C_i, H/s, W/s] for s in 8, 16, 32
        return self.fpn(OrderedDict((str(i), f) for i, f in enumerate(feats)))


def set_normalization(model: nn.Module, mean, std) -> None:
    """The mean/std the detector's own transform normalises with (a backbone's pretrained weights')."""
    model.transform.image_mean = [float(v) for v in mean]
    model.transform.image_std = [float(v) for v in std]


def _no_resize(model: nn.Module, image_size: int) -> nn.Module:
    """Inputs are letterboxed squares already: keep the model's transform from resizing them."""
    model.transform.min_size = (image_size,)
    model.transform.max_size = image_size
    if model.transform.fixed_size is not None:  # SSD: a fixed input size instead of min/max
        model.transform.fixed_size = (image_size, image_size)
    model.label_offset = getattr(model, "label_offset", 0)
    return model


def fcos_timm(
    backbone: str, *, num_classes: int, image_size: int, channels: int = 96, head_convs: int = 2, **kwargs
) -> nn.Module:
    anchors = AnchorGenerator(tuple((s,) for s in FCOS_STRIDES), ((1.0,),) * len(FCOS_STRIDES))
    head = FCOSHead(channels, num_anchors=1, num_classes=num_classes, num_convs=head_convs)
    model = FCOS(
        TimmFPN(backbone, channels),
        num_classes,
        min_size=image_size,
        max_size=image_size,
        image_mean=IMAGENET_MEAN,
        image_std=IMAGENET_STD,
        anchor_generator=anchors,
        head=head,
        score_thresh=0.01,
        detections_per_img=100,
        topk_candidates=1000,
        **kwargs,
    )
    return _no_resize(model, image_size)


# (timm backbone, FPN/head channels); test_resnet is a few-hundred-k-parameter model for fast tests.
for _backbone, _channels in (
    ("test_resnet", 32),
    ("resnet10t", 96),
    ("resnet18", 96),
    ("resnet34", 128),
    ("resnet50", 128),
    ("cspresnet50", 128),
    ("mobilenetv3_large_100", 96),
    ("efficientnet_b0", 96),
    ("regnetx_004", 96),
):
    register_model("detect", f"fcos_{_backbone}")(partial(fcos_timm, _backbone, channels=_channels))


# ------------------------------------------------------------------ torchvision's own architectures
def _torchvision(
    builder_name: str, *, num_classes: int, image_size: int, background: bool, **kwargs
) -> nn.Module:
    from torchvision.models import detection

    builder = getattr(detection, builder_name)
    if not builder_name.startswith("ssd"):  # SSD's input size is fixed; set by _no_resize
        kwargs.update(min_size=image_size, max_size=image_size)
    model = builder(weights=None, weights_backbone=None, num_classes=num_classes + background, **kwargs)
    model.label_offset = int(background)
    model.torchvision_builder = builder_name  # whose COCO weights fit (lanner.models.pretrained)
    return _no_resize(model, image_size)


@register_model("detect", "fcos_mobilenet_v3_large_fpn")
def fcos_mobilenet_v3(*, num_classes: int, image_size: int, **kwargs) -> nn.Module:
    from torchvision.models import mobilenet_v3_large
    from torchvision.models.detection.backbone_utils import _mobilenet_extractor

    backbone = _mobilenet_extractor(mobilenet_v3_large(weights=None), True, trainable_layers=6)
    # The extractor's FPN levels: strides 16 and 32 plus a max-pooled 64; FCOS anchors are the strides.
    anchors = AnchorGenerator(((16,), (32,), (64,)), ((1.0,),) * 3)
    model = FCOS(
        backbone,
        num_classes,
        min_size=image_size,
        max_size=image_size,
        anchor_generator=anchors,
        score_thresh=0.01,
        **kwargs,
    )
    return _no_resize(model, image_size)


register_model("detect", "retinanet_resnet50_fpn")(
    partial(
        _torchvision, "retinanet_resnet50_fpn", background=False, score_thresh=0.01, detections_per_img=100
    )
)
register_model("detect", "retinanet_resnet50_fpn_v2")(
    partial(
        _torchvision, "retinanet_resnet50_fpn_v2", background=False, score_thresh=0.01, detections_per_img=100
    )
)
register_model("detect", "fcos_resnet50_fpn")(
    partial(_torchvision, "fcos_resnet50_fpn", background=False, score_thresh=0.01, detections_per_img=100)
)
register_model("detect", "fasterrcnn_resnet50_fpn_v2")(
    partial(_torchvision, "fasterrcnn_resnet50_fpn_v2", background=True, box_score_thresh=0.01)
)
register_model("detect", "fasterrcnn_mobilenet_v3_large_fpn")(
    partial(_torchvision, "fasterrcnn_mobilenet_v3_large_fpn", background=True, box_score_thresh=0.01)
)
register_model("detect", "fasterrcnn_resnet50_fpn")(
    partial(_torchvision, "fasterrcnn_resnet50_fpn", background=True, box_score_thresh=0.01)
)
register_model("detect", "ssdlite320_mobilenet_v3_large")(
    partial(
        _torchvision,
        "ssdlite320_mobilenet_v3_large",
        background=True,
        score_thresh=0.01,
        detections_per_img=100,
    )
)
