"""Transfer learning: start from a run lanner trained, drop or rename classes, freeze then unfreeze."""

import json
import subprocess
import sys

import torch
from helpers import write_digit_folders

from lanner import api
from lanner.config import make_config
from lanner.engine.checkpoint import load_checkpoint
from lanner.errors import ConfigError


def _cfg(tmp_path, data, run, **kw):
    base = {
        "data": str(data),
        "run": str(tmp_path / run),
        "model": "test_resnet",
        "image_size": 16,
        "epochs": 1,
        "batch_size": 8,
        "cache_dir": str(tmp_path / "cache"),
        "hflip": False,
    }
    return make_config(base | kw)


def test_pretrained_from_a_run_with_other_classes_and_frozen_backbone(tmp_path, capsys):
    data = write_digit_folders(tmp_path / "d", per_class=10)
    first = api.train(_cfg(tmp_path, data, "first"), evaluate_after=False)
    second = api.train(
        _cfg(
            tmp_path,
            data,
            "second",
            classes=["digit0", "digit7"],
            rename={"digit7": "seven"},
            pretrained=str(first),
            freeze_epochs=1,
            epochs=2,
        ),
        evaluate_after=False,
    )
    out = "".join(capsys.readouterr().out.split())  # rich wraps long lines at the terminal width
    assert "classheads:keptdigit0,seven<-digit7;newnone" in out
    surgery = json.loads((second / "pretrained.json").read_text())["classes"]
    assert surgery == {"from": {"digit0": "digit0", "seven": "digit7"}, "dropped": ["digit1"]}
    assert "backboneunfrozen" in out
    a = load_checkpoint(first / "checkpoints" / "last.ckpt")["state_dict"]
    b = load_checkpoint(second / "checkpoints" / "last.ckpt")
    assert b["meta"]["classes"] == ["digit0", "seven"] and b["state_dict"]["fc.weight"].shape[0] == 2
    # The backbone started from the first run's weights (then trained one unfrozen epoch).
    stem = "stem.conv.weight" if "stem.conv.weight" in a else next(k for k in a if k.endswith("conv1.weight"))
    start = torch.nn.functional.cosine_similarity(a[stem].flatten(), b["state_dict"][stem].flatten(), dim=0)
    assert start > 0.9
    metrics = api.evaluate(second, console=None, report=False)
    assert (
        metrics["classes"] == ["digit0", "seven"]
        and sum(metrics["per_class"][c]["support"] for c in metrics["classes"]) == metrics["num_images"]
    )


def test_pretrained_weights_of_another_architecture_are_refused(tmp_path):
    data = write_digit_folders(tmp_path / "d", per_class=4)
    try:
        api.train(_cfg(tmp_path, data, "x", pretrained="resnet18.a1_in1k"), evaluate_after=False)
    except ConfigError as e:
        assert "weights of resnet18, but the model is test_resnet" in str(e)
    else:
        raise AssertionError("expected a clear error")


def test_convert_cli_round_trip(tmp_path, shared_data):
    src = shared_data / "raccoon_voc"
    out = subprocess.run(
        [sys.executable, "-m", "lanner", "convert", str(src), "--to", "coco", str(tmp_path / "c")],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "200 images, 1 classes" in out.stdout
    check = subprocess.run(
        [sys.executable, "-m", "lanner", "check", str(tmp_path / "c"), "--json"],
        capture_output=True,
        text=True,
        check=True,
    )
    summary = json.loads(check.stdout)
    assert summary["num_images"] == 200 and summary["boxes_per_class"] == {"raccoon": 217}
