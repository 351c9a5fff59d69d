"""--pretrained imagenet / a timm tag / coco, offline from caches on disk; local files; the report."""

from __future__ import annotations

import csv
import json
import os

import numpy as np
import pytest
import timm
import torch
from helpers import write_digit_folders
from safetensors.torch import save_file
from transfer_helpers import REPO, lanner, make_hf_cache, offline_env

from lanner import api
from lanner.config import make_config
from lanner.data.formats import read_dataset
from lanner.engine.checkpoint import load_checkpoint
from lanner.errors import CheckpointError, ConfigError

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


def _cfg(tmp_path, data, run, **kw):
    base = {"data": str(data), "run": str(tmp_path / run), "model": "test_resnet", "image_size": 32}
    base |= {"epochs": 1, "batch_size": 8, "cache_dir": str(tmp_path / "cache"), "hflip": False}
    return make_config(base | kw)


class _Boom:
    def __reduce__(self):
        return (os.system, ("touch pwned",))


def test_unreadable_files_are_refused_by_name(tmp_path):
    data = write_digit_folders(tmp_path / "d", per_class=4)
    hostile, empty, cut = tmp_path / "evil.pth", tmp_path / "empty.pt", tmp_path / "cut.safetensors"
    torch.save({"fc.weight": _Boom()}, hostile)
    empty.write_bytes(b"")
    save_file({"w": torch.zeros(1000)}, str(cut))
    cut.write_bytes(cut.read_bytes()[:100])
    for i, path in enumerate((hostile, empty, cut)):
        with pytest.raises(CheckpointError, match="cannot read checkpoint") as e:
            api.train(_cfg(tmp_path, data, f"r{i}", pretrained=str(path)), evaluate_after=False)
        assert str(path) in str(e.value)
    assert not (tmp_path / "pwned").exists() and not (REPO / "pwned").exists()
    out = lanner(
        ["train", data, "--run", tmp_path / "cli", *TRAIN, "--pretrained", empty], offline_env(tmp_path)
    )
    assert out.returncode == 2 and "cannot read checkpoint" in out.stdout and "Traceback" not in out.stdout


def test_weights_of_another_model_are_refused(tmp_path):
    data = write_digit_folders(tmp_path / "d", per_class=4)
    other = tmp_path / "effnet.safetensors"
    save_file(timm.create_model("test_efficientnet").state_dict(), str(other))
    with pytest.raises(ConfigError, match=r"only \d+ of the \d+ tensors"):
        api.train(_cfg(tmp_path, data, "r", pretrained=str(other)), evaluate_after=False)


def test_stages_freeze_backbone_lr_and_classifier_surgery(tmp_path):
    data = write_digit_folders(tmp_path / "d", per_class=8)
    source = timm.create_model("test_resnet", num_classes=3).state_dict()
    weights = tmp_path / "w.pth"
    torch.save({"state_dict": source, "epoch": 3}, weights)  # a timm training checkpoint
    run = api.train(
        _cfg(tmp_path, data, "a", pretrained=str(weights), freeze="stages:1", backbone_lr=0.1, lr=0.01),
        evaluate_after=False,
    )
    ckpt = load_checkpoint(run / "checkpoints" / "last.ckpt")
    state = ckpt["state_dict"]
    for k, v in source.items():
        stem_or_first = k.startswith(("conv1.", "bn1.", "layer1."))
        assert torch.equal(state[k], v) == stem_or_first, k
    scales = sorted(g.get("lr_scale", 1.0) for g in ckpt["optimizer"]["param_groups"])
    assert scales == [0.1, 0.1, 1.0, 1.0]
    # Class surgery from that run: kept classes' fc rows are the source's rows.
    b = api.train(
        _cfg(
            tmp_path,
            data,
            "b",
            pretrained=str(run),
            classes=["digit7", "digit0"],
            rename={"digit0": "zero"},
            lr=0.0,
        ),
        evaluate_after=False,
    )
    fc = load_checkpoint(b / "checkpoints" / "last.ckpt")
    names = fc["meta"]["classes"]
    src_classes = ckpt["meta"]["classes"]
    for i, name in enumerate(names):
        j = src_classes.index("digit0" if name == "zero" else name)
        assert torch.equal(fc["state_dict"]["fc.weight"][i], state["fc.weight"][j])
        assert torch.equal(fc["state_dict"]["fc.bias"][i], state["fc.bias"][j])


def test_probe_matches_scikit_learn_and_predicts_through_the_cli(tmp_path):
    from sklearn.linear_model import LogisticRegression

    data = write_digit_folders(tmp_path / "d", per_class=10, splits=("train", "val"))
    weights = tmp_path / "w.safetensors"
    torch.manual_seed(0)
    save_file(timm.create_model("test_resnet").state_dict(), str(weights))
    env = offline_env(tmp_path)
    run = tmp_path / "probe"
    args = [
        "probe",
        data,
        "--run",
        run,
        "--model",
        "test_resnet",
        "--image-size",
        "32",
        "--pretrained",
        weights,
    ]
    out = lanner([*args, "--cache-dir", tmp_path / "cache", "--no-report"], env)
    assert out.returncode == 0, out.stdout + out.stderr
    probe = json.loads((run / "probe.json").read_text())
    metrics = json.loads((run / "metrics.json").read_text())
    acc = metrics.get("accuracy", metrics.get("val", {}).get("accuracy"))
    assert acc == pytest.approx(probe["sklearn"]["val_acc"])
    # The same features, the same fit, by hand (cached features are reused: the key is the files).
    (feats,) = [np.load(p) for p in (tmp_path / "cache" / "probe-features").glob("*.npy")]
    dataset = read_dataset(data)
    labels = np.array([r.label for r in dataset.records])
    train = np.array([r.split == "train" for r in dataset.records])
    clf = LogisticRegression(max_iter=2000, random_state=0).fit(feats[train], labels[train])
    assert clf.score(feats[~train], labels[~train]) == pytest.approx(probe["sklearn"]["val_acc"])
    val_files = [r.path for r in dataset.records if r.split == "val"]
    out = lanner(["predict", run, *val_files, "--out", tmp_path / "p.csv"], env)
    assert out.returncode == 0, out.stdout + out.stderr
    with open(tmp_path / "p.csv") as f:
        predicted = {row["path"]: row["label"] for row in csv.DictReader(f)}
    expected = [dataset.classes[i] for i in clf.predict(feats[~train])]
    assert [predicted[str(p)] for p in val_files] == expected
