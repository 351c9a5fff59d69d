"""Detectors: ImageNet weights into an FCOS timm backbone, heads-only retraining, class surgery on the
FCOS classification conv, torchvision COCO weights (SSDlite) from TORCH_HOME, offline."""

from __future__ import annotations

import json

import pytest
import torch
from test_detect_train import tiny_subset
from transfer_helpers import make_hf_cache

from lanner import api
from lanner.config import make_config
from lanner.engine.checkpoint import load_checkpoint
from lanner.errors import ConfigError
from lanner.tasks.loading import load_run

BODY, FPN, CLS = "backbone.body.", "backbone.fpn.", "head.classification_head.cls_logits."


@pytest.fixture(scope="module")
def rbc(shared_data, tmp_path_factory):
    return tiny_subset(shared_data, tmp_path_factory.mktemp("data") / "rbc")


@pytest.fixture
def offline(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    return tmp_path


def _train(tmp_path, data, run, **kw):
    base = {"data": str(data), "run": str(tmp_path / run), "model": "fcos_test_resnet", "image_size": 64}
    base |= {"epochs": 1, "batch_size": 4, "cache_dir": str(tmp_path / "cache"), "augment": "none"}
    return api.train(make_config(base | kw), evaluate_after=False)


def _state(run, which="last"):
    return load_checkpoint(run / "checkpoints" / f"{which}.ckpt")["state_dict"]


def test_imagenet_backbone_then_heads_only_then_class_surgery(offline, rbc):
    tmp_path = offline
    source = make_hf_cache(tmp_path / "hf")
    a = _train(tmp_path, rbc, "a", pretrained="imagenet", freeze="backbone")
    report = json.loads((a / "pretrained.json").read_text())
    assert report["scope"] == "backbone.body" and report["loaded"] == report["expected"]
    state_a = _state(a)
    body = [k for k in state_a if k.startswith(BODY)]
    for k in body:  # timm's features_only names are the classifier's here (test_resnet)
        assert torch.equal(state_a[k], source[k[len(BODY) :]]), k
    # test_resnet.r160_in1k's pretrained config says mean = std = 0.5: the run normalises so, and so
    # does the model rebuilt from its checkpoint (eval, predict, export).
    half = {"mean": [0.5] * 3, "std": [0.5] * 3}
    assert load_checkpoint(a / "checkpoints" / "last.ckpt")["meta"]["normalize"] == half
    transform = load_run(a, "last").model.transform
    assert transform.image_mean == half["mean"] and transform.image_std == half["std"]

    b = _train(tmp_path, rbc, "b", pretrained=str(a), freeze="backbone,fpn")
    state_b = _state(b)
    for k in state_a:
        if k.startswith((BODY, FPN)):
            assert torch.equal(state_a[k], state_b[k]), k
    assert not torch.equal(state_a[CLS + "weight"], state_b[CLS + "weight"])  # the heads trained

    c = _train(tmp_path, rbc, "c", pretrained=str(a), classes=["wbc"], rename={"wbc": "white"}, lr=0.0)
    state_c = _state(c)
    classes_a = load_checkpoint(a / "checkpoints" / "last.ckpt")["meta"]["classes"]
    assert classes_a == ["rbc", "wbc"] and state_c[CLS + "weight"].shape[0] == 1
    assert torch.equal(state_c[CLS + "weight"][0], state_a[CLS + "weight"][1])
    assert torch.equal(state_c[CLS + "bias"][0], state_a[CLS + "bias"][1])
    surgery = json.loads((c / "pretrained.json").read_text())["classes"]
    assert surgery == {"from": {"white": "wbc"}, "dropped": ["rbc"]}


def _fake_coco_ssdlite(torch_home):
    from torchvision.models import get_model_weights
    from torchvision.models.detection import ssdlite320_mobilenet_v3_large

    torch.manual_seed(3)
    model = ssdlite320_mobilenet_v3_large(weights=None, weights_backbone=None, num_classes=91)
    url = get_model_weights("ssdlite320_mobilenet_v3_large").COCO_V1.url
    target = torch_home / "hub" / "checkpoints" / url.rsplit("/", 1)[-1]
    target.parent.mkdir(parents=True)
    torch.save(model.state_dict(), target)
    return model.state_dict()


def test_coco_weights_for_ssdlite_from_torch_home(offline, rbc):
    tmp_path = offline
    kw = {"model": "ssdlite320_mobilenet_v3_large", "image_size": 128, "pretrained": "coco"}
    with pytest.raises(ConfigError, match="ssdlite320_mobilenet_v3_large_coco-a79551df.pth") as e:
        _train(tmp_path, rbc, "none", **kw)
    assert str(tmp_path / "torch" / "hub" / "checkpoints") in str(e.value) and "--pretrained path/to/" in str(
        e.value
    )
    coco = _fake_coco_ssdlite(tmp_path / "torch")
    run = _train(tmp_path, rbc, "ssd", freeze="backbone", **kw)
    state = _state(run)
    report = json.loads((run / "pretrained.json").read_text())
    assert report["weights"] == "coco (ssdlite320_mobilenet_v3_large COCO_V1)"
    features = [k for k in state if k.startswith("backbone.features.")]
    assert features and all(torch.equal(state[k], coco[k]) for k in features)
    head = "head.classification_head.module_list.0.1.weight"
    assert state[head].shape[0] == coco[head].shape[0] // 91 * 3  # 2 classes + background per anchor
    assert report["loaded"] > len(coco) / 2


def test_imagenet_backbone_of_a_torchvision_detector_from_torch_home(offline, rbc):
    from torchvision.models import mobilenet_v3_large

    tmp_path = offline
    kw = {"model": "fasterrcnn_mobilenet_v3_large_fpn", "pretrained": "imagenet", "freeze": "backbone"}
    with pytest.raises(ConfigError, match="mobilenet_v3_large-8738ca79.pth") as e:
        _train(tmp_path, rbc, "none", **kw)
    assert str(tmp_path / "torch" / "hub" / "checkpoints") in str(e.value) and "--pretrained path/to/" in str(
        e.value
    )
    torch.manual_seed(4)  # ImageNet weights made here, in the file torchvision's enum names
    classifier = mobilenet_v3_large(weights=None)
    with torch.no_grad():
        for m in classifier.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
    target = tmp_path / "torch" / "hub" / "checkpoints" / "mobilenet_v3_large-8738ca79.pth"
    target.parent.mkdir(parents=True)
    torch.save(classifier.state_dict(), target)
    run = _train(tmp_path, rbc, "tv", **kw)
    report = json.loads((run / "pretrained.json").read_text())
    assert report["weights"] == "imagenet (MobileNet_V3_Large_Weights.IMAGENET1K_V1)"
    assert report["scope"] == "backbone.body" and report["loaded"] > report["expected"] / 2
    state, imagenet = _state(run), classifier.state_dict()
    body = [k for k in state if k.startswith(BODY) and not k.endswith("num_batches_tracked")]
    assert body and all(torch.equal(state[k], imagenet["features." + k[len(BODY) :]]) for k in body)
