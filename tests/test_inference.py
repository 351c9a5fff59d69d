"""Inference copies of trained models (lanner eval/predict): folded BatchNorm, channels-last, autocast.

Every check compares against the model as trained: the copy must give the same outputs (float32:
to rounding; bf16: close) and leave the original untouched.
"""

from __future__ import annotations

import pytest
import torch
from helpers import save_untrained_detector
from torch import nn

from lanner.errors import ConfigError
from lanner.models import create_model
from lanner.models.inference import inference_model, resolve_inference
from lanner.predict.tiled import CPU_TILE_BATCH, Tiling, score_floor
from lanner.rundir import CheckpointMeta
from lanner.tasks.detect.setup import build_detector_from_meta
from lanner.tasks.loading import load_for_inference

META = CheckpointMeta.from_checkpoint(
    {
        "meta": {"task": "detect", "classes": ["a", "b", "c"], "image_size": 64, "score_threshold": 0.0},
        "model_name": "fcos_test_resnet",
    }
)


def _randomise_batchnorm(model: nn.Module) -> nn.Module:
    """Non-trivial running statistics and affine terms, as a trained model has."""
    g = torch.Generator().manual_seed(0)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.rand(m.num_features, generator=g) - 0.5)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.bias.data.copy_(torch.rand(m.num_features, generator=g) - 0.5)
    return model.eval()


def _seeded_detector() -> nn.Module:
    """The same random detector whatever ran before (near-tied boxes must not depend on test order)."""
    torch.manual_seed(0)
    return _randomise_batchnorm(build_detector_from_meta(META))


def _batchnorms(model: nn.Module) -> int:
    return sum(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())


def _images(n: int = 3, size: int = 64) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return [torch.rand(3, size, size, generator=g) for _ in range(n)]


def test_folded_detector_gives_the_same_detections_and_leaves_the_original_alone():
    model = _seeded_detector()
    fast = inference_model(model, "cpu", "32")
    assert _batchnorms(model) > 0 and _batchnorms(fast) == 0
    assert fast.label_offset == model.label_offset
    with torch.inference_mode():
        want, got = model(_images()), fast(_images())
    for w, g in zip(want, got, strict=True):
        assert len(w["boxes"]) == len(g["boxes"]) > 0
        assert torch.allclose(w["boxes"], g["boxes"], atol=1e-3)
        assert torch.allclose(w["scores"], g["scores"], atol=1e-5)
        assert torch.equal(w["labels"], g["labels"])


@pytest.mark.parametrize("name", ["test_resnet", "test_efficientnet", "test_vit"])
def test_folded_classifier_gives_the_same_logits(name):
    size = 160 if name == "test_vit" else 48
    model = _randomise_batchnorm(create_model("classify", name, num_classes=4))
    model.train()  # the model being trained stays in training mode
    fast = inference_model(model, "cpu", "32")
    assert model.training and not fast.training
    x = torch.rand(2, 3, size, size)
    with torch.inference_mode():
        assert torch.allclose(model.eval()(x), fast(x), atol=1e-4)
    if _batchnorms(model):  # a ViT has none to fold
        assert _batchnorms(fast) == 0


def test_bf16_runs_the_backbone_in_bf16_and_returns_float32_boxes():
    model = _seeded_detector()
    fast = inference_model(model, "cpu", "bf16")
    seen = []
    fast.backbone.module.register_forward_hook(lambda m, i, o: seen.extend(v.dtype for v in o.values()))
    with torch.inference_mode():
        want, got = model(_images(1)), fast(_images(1))
    assert seen and set(seen) == {torch.bfloat16}  # the heavy part ran in bf16 ...
    assert got[0]["boxes"].dtype == torch.float32  # ... box decoding did not
    assert torch.allclose(want[0]["scores"][:10], got[0]["scores"][:10], atol=0.02)


def test_classifier_autocast_hands_back_float32_logits():
    model = create_model("classify", "test_resnet", num_classes=4).eval()
    x = torch.rand(2, 3, 48, 48)
    with torch.inference_mode():
        logits = inference_model(model, "cpu", "bf16")(x)
        assert logits.dtype == torch.float32
        assert torch.allclose(logits, model(x), atol=0.1)


def test_device_and_precision_defaults(tmp_path):
    device, precision = resolve_inference("auto", "auto")
    if torch.cuda.is_available():
        assert device.type == "cuda" and precision in ("bf16", "16-mixed")
    else:
        assert (device.type, precision) == ("cpu", "32")
    assert resolve_inference("cpu", "bf16") == (torch.device("cpu"), "bf16")
    with pytest.raises(ValueError, match="precision 'fp8'"):
        inference_model(nn.Conv2d(3, 3, 1), "cpu", "fp8")

    run = save_untrained_detector(tmp_path / "det", META.to_checkpoint()["meta"])
    loaded = load_for_inference(run, "cpu", "auto")
    assert (loaded.device.type, loaded.precision) == ("cpu", "32") and _batchnorms(loaded.model) == 0
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="CUDA is not available"):
            load_for_inference(run, "cuda")


def test_tile_batch_size_belongs_to_the_device_not_the_run():
    saved = {"tile": 256, "overlap": 0.25, "batch_size": 8}  # as older runs stored it
    tiling = Tiling.from_dict(saved)
    assert tiling.batch_size is None
    assert tiling.for_device(nn.Identity(), torch.device("cpu")).batch_size == CPU_TILE_BATCH
    assert Tiling(256, 0.25, batch_size=2).for_device(nn.Identity(), torch.device("cpu")).batch_size == 2


def test_score_floor_keeps_exactly_the_boxes_above_the_threshold():
    model = _seeded_detector()
    images = _images(2)
    with torch.inference_mode():
        everything = model(images)
    threshold = float(everything[0]["scores"].median())
    with score_floor(model, threshold), torch.inference_mode():
        assert model.score_thresh == pytest.approx(threshold, abs=1e-5)
        floored = model(images)
    assert model.score_thresh == 0.01  # restored
    for full, few in zip(everything, floored, strict=True):
        keep = full["scores"] >= threshold
        assert 0 < int(keep.sum()) < len(keep)
        assert torch.equal(full["boxes"][keep], few["boxes"])
        assert torch.equal(full["labels"][keep], few["labels"])
    with score_floor(model, 0.001):  # never lowered
        assert model.score_thresh == 0.01
