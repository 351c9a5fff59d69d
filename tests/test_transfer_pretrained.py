"""--pretrained imagenet / a timm tag / coco, offline from caches on disk; local files; the report."""

from __future__ import annotations

import json

import torch
from helpers import write_digit_folders
from transfer_helpers import lanner, make_hf_cache, offline_env

from lanner.engine.checkpoint import load_checkpoint

TRAIN = ["--model", "test_resnet", "--image-size", "32", "--epochs", "1", "--batch-size", "8", "--no-hflip"]


def test_imagenet_from_the_hf_cache_frozen_backbone(tmp_path):
    data = write_digit_folders(tmp_path / "d", per_class=8)
    source = make_hf_cache(tmp_path / "hf")
    run = tmp_path / "run"
    env = offline_env(tmp_path / "hf")
    out = lanner(
        ["train", data, "--run", run, *TRAIN, "--pretrained", "imagenet", "--freeze", "backbone"], env
    )
    assert out.returncode == 0, out.stdout + out.stderr
    report = json.loads((run / "pretrained.json").read_text())
    assert report["weights"] == "imagenet (test_resnet.r160_in1k)" and report["skipped_shape"] == [
        "fc.bias",
        "fc.weight",
    ]
    assert report["loaded"] == report["expected"] - 2 and not report["missing"]
    ckpt = load_checkpoint(run / "checkpoints" / "best.ckpt")
    state = ckpt["state_dict"]
    for k, v in source.items():
        if not k.startswith("fc."):
            assert torch.equal(state[k], v), k  # weights and BN running stats untouched
    fresh = load_checkpoint(run / "checkpoints" / "last.ckpt")["state_dict"]
    assert fresh["fc.weight"].shape == (3, source["fc.weight"].shape[1])
    prep = ckpt["meta"]["preprocessing"]
    assert (
        prep["mean"] == [0.5, 0.5, 0.5] and prep["crop_pct"] == 0.95 and prep["interpolation"] == "bilinear"
    )
    assert prep["cache_size"] == int(32 / 0.95)


def test_imagenet_without_a_cache_names_the_file_to_fetch(tmp_path):
    data = write_digit_folders(tmp_path / "d", per_class=4)
    env = offline_env(tmp_path / "empty")
    out = lanner(
        ["train", data, "--run", tmp_path / "r", *TRAIN, "--pretrained", "test_resnet.r160_in1k"], env
    )
    assert out.returncode == 2, out.stdout + out.stderr
    text = " ".join(out.stdout.split())
    assert "timm/test_resnet.r160_in1k" in text and "model.safetensors" in text
    assert str(tmp_path / "empty" / "hub") in text and "--pretrained path/to/model.safetensors" in text
    assert "Traceback" not in out.stdout + out.stderr
