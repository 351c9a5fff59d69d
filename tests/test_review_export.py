"""`lanner review --export labelme|coco OUT` on real images with known corrupted labels: only the flagged
images go out, their labels as they were, each suggestion an extra annotation marked ``suggested:``,
and lanner's own readers read the folder back; a review stopped in a fold continues on a re-run."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from helpers import write_digit_folders
from test_review import _flipped_digits, _isolated, _untrained_run, detection_run  # noqa: F401

from lanner import api, cli
from lanner.data.detections import Detections
from lanner.data.formats import read_dataset, write_dataset
from lanner.data.records import Dataset, ImageRecord
from lanner.errors import Interrupted
from lanner.eval.label_issues import (
    CLASSIFY_COLUMNS,
    DETECT_COLUMNS,
    classification_issues,
    detection_issues,
    write_issues,
)
from lanner.tasks.detect.review import DetectReviewer
from lanner.tasks.review_export import REMOVE, SUGGESTED
from lanner.tasks.review_folds import labels_digest


def _earlier_review(run: Path, data: Path, issues, columns) -> None:
    """RUN/review as a review of ``data`` (split train) leaves it, newer than the checkpoint."""
    write_issues(run / "review" / "label_issues.csv", issues, columns)
    summary = {"data": str(data), "split": "train", "folds": 3, "issues": len(issues)}
    (run / "review" / "review.json").write_text(json.dumps(summary))
    later = (run / "checkpoints" / "best.ckpt").stat().st_mtime + 5
    os.utime(run / "review" / "label_issues.csv", (later, later))


# ----------------------------------------------------------------------------------------- detection
@pytest.fixture
def corrupted_boxes(shared_data, detection_run):  # noqa: F811
    """The detection run's data with one image's labels corrupted (a box deleted, one class flipped,
    one box moved), and the issues perfect predictions find in it: RUN/review as a review leaves it."""
    run, data = detection_run
    dataset = read_dataset(data)
    n, record = next(
        (n, r)
        for n, r in enumerate(dataset.records)
        if len(set(r.labels.tolist())) > 1 and len(_isolated(r, 3)) == 3
    )
    truth = Detections(record.boxes, np.full(len(record.boxes), 0.9), record.labels)
    deleted, flipped, moved = _isolated(record, 3)
    boxes, labels = record.boxes.copy(), record.labels.copy()
    labels[flipped] = (labels[flipped] + 1) % len(dataset.classes)
    boxes[moved, [0, 2]] += 0.4 * (boxes[moved, 2] - boxes[moved, 0])
    keep = np.arange(len(boxes)) != deleted
    dataset.records[n] = ImageRecord(
        record.path, record.width, record.height, boxes=boxes[keep], labels=labels[keep]
    )
    corrupted = data.parent / "rbc_corrupted"
    write_dataset(dataset, "coco", corrupted)
    dataset = read_dataset(corrupted)
    others = [Detections(r.boxes, np.full(r.num_boxes, 0.9), r.labels) for r in dataset.records]
    others[n] = truth
    issues = detection_issues(dataset, others)
    assert sorted(i.kind for i in issues) == ["loose_box", "missing_box", "wrong_class"]
    _earlier_review(run, corrupted, issues, DETECT_COLUMNS)
    return run, corrupted, dataset.records[n], truth, (deleted, flipped, moved)


@pytest.mark.parametrize("fmt", ["labelme", "coco"])
def test_detection_export_round_trip(corrupted_boxes, tmp_path, capsys, fmt):
    run, data, given, truth, (deleted, flipped, moved) = corrupted_boxes
    before = sorted(p.name for p in data.rglob("*"))
    out = tmp_path / "fix"
    assert cli.run_cli(["review", str(run), str(data), "--export", fmt, str(out), "--no-report"]) == 0
    said = " ".join(capsys.readouterr().out.split())
    assert "exporting the review of" in said and "exported 1 flagged images with 3 suggestions" in said
    assert sorted(p.name for p in data.rglob("*")) == before  # the source is untouched
    assert json.loads((run / "review" / "review.json").read_text())["export"]["images"] == 1  # for the report
    assert sorted(p.name for p in out.rglob("*.jpg")) == [given.path.name]  # only the flagged image
    assert cli.run_cli(["check", str(out)]) == 0
    back = read_dataset(out)
    (record,) = back.records
    names = [back.classes[i] for i in record.labels]
    mine = [not n.startswith(SUGGESTED) for n in names]
    classes = read_dataset(data).classes
    assert record.boxes[mine] == pytest.approx(given.boxes, abs=0.01)  # the labels as they are
    assert [n for n, m in zip(names, mine, strict=True) if m] == [classes[i] for i in given.labels]
    suggested = [(n, b) for n, b, m in zip(names, record.boxes, mine, strict=True) if not m]
    assert len(suggested) == 3 and REMOVE not in dict(suggested)  # missing, wrong class, loose: one each
    for index in (deleted, flipped, moved):  # each at the true box, in the true class
        wanted = (SUGGESTED + classes[truth.labels[index]], truth.boxes[index])
        assert any(n == wanted[0] and np.abs(b - wanted[1]).max() < 0.01 for n, b in suggested), wanted
    notes = _notes(out, fmt)
    assert sorted(n.split()[1] for n in notes) == ["loose_box", "missing_box", "wrong_class"]


def _notes(out: Path, fmt: str) -> list[str]:
    """The suggestions' notes as the annotation tool shows them."""
    if fmt == "labelme":
        (file,) = out.rglob("*.json")
        return [s["description"] for s in json.loads(file.read_text())["shapes"] if s["description"]]
    data = json.loads((out / "_annotations.coco.json").read_text())
    return [a["attributes"]["note"] for a in data["annotations"] if "attributes" in a]


def test_export_refuses_a_full_folder_and_an_unknown_format(corrupted_boxes, tmp_path, capsys):
    run, data, *_ = corrupted_boxes
    full = tmp_path / "full"
    full.mkdir()
    (full / "keep.txt").write_text("mine")
    assert cli.run_cli(["review", str(run), str(data), "--export", "coco", str(full), "--no-report"]) == 2
    assert "not empty" in capsys.readouterr().out and (full / "keep.txt").read_text() == "mine"
    assert (
        cli.run_cli(["review", str(run), str(data), "--export", "voc", str(tmp_path / "x"), "--no-report"])
        == 2
    )
    assert "unknown export format" in capsys.readouterr().out
    args = ["review", str(run), str(data), "--export", "coco", str(data.parent), "--force", "--no-report"]
    assert cli.run_cli(args) == 2  # --force never replaces a folder holding the data
    assert "a folder of its own" in " ".join(capsys.readouterr().out.split())
    args = ["review", str(run), str(data), "--export", "coco", str(full), "--force", "--no-report"]
    assert cli.run_cli(args) == 0 and not (full / "keep.txt").exists()
    assert len(read_dataset(full).records) == 1


# ------------------------------------------------------------------------------------ classification
def test_classification_export_round_trip(tmp_path, capsys):
    flipped = _flipped_digits(tmp_path / "digits")
    data = tmp_path / "digits"
    run = _untrained_run(tmp_path / "run", data)
    dataset = read_dataset(data)
    truth = np.array(
        [dataset.classes.index(flipped.get(str(r.path), dataset.classes[r.label])) for r in dataset.records]
    )
    probs = np.eye(len(dataset.classes))[truth] * 0.9 + 0.1 / len(dataset.classes)  # a model that knows
    paths = [str(r.path) for r in dataset.records]
    issues = classification_issues(
        paths, probs, np.array([r.label for r in dataset.records]), dataset.classes
    )
    assert sorted(i.path for i in issues) == sorted(flipped)
    _earlier_review(run, data, issues, CLASSIFY_COLUMNS)

    labelme, coco = tmp_path / "labelme", tmp_path / "coco"
    for fmt, out in (("labelme", labelme), ("coco", coco)):
        assert cli.run_cli(["review", str(run), str(data), "--export", fmt, str(out), "--no-report"]) == 0
        assert cli.run_cli(["check", str(out)]) == 0
    capsys.readouterr()
    # Labelme: each flagged image where it was (relative path kept), its class flag set, the suggestion
    # an unchecked flag naming the true class
    exported = sorted(str(p.relative_to(labelme)) for p in labelme.rglob("*.png"))
    assert exported == sorted(str(Path(p).relative_to(data)) for p in flipped)
    back = read_dataset(labelme)
    assert back.task == "classify" and back.classes == dataset.classes
    for record in back.records:
        source = str(data / record.path.relative_to(labelme))
        assert back.classes[record.label] == Path(source).parent.name  # the given label, unchanged
        flags = json.loads(record.path.with_suffix(".json").read_text())["flags"]
        marks = [k for k in flags if k.startswith(SUGGESTED)]
        assert len(marks) == 1 and marks[0].startswith(SUGGESTED + flipped[source] + " (lanner: wrong_label")
        assert flags[marks[0]] is False and sum(flags.values()) == 1
    # COCO: a whole-image box of the given class and one of suggested:<true class>
    back = read_dataset(coco)
    assert len(back.records) == len(flipped) and all(r.num_boxes == 2 for r in back.records)
    names = {back.classes[r.labels[1]] for r in back.records}
    assert names == {SUGGESTED + c for c in flipped.values()}


# --------------------------------------------------------------------------------------- Ctrl-C in a fold
def test_a_review_stopped_in_a_fold_continues_on_a_rerun(tmp_path, monkeypatch, capsys):
    data = write_digit_folders(tmp_path / "digits", per_class=8)
    run = _untrained_run(tmp_path / "run", data, epochs=1)  # each fold: one epoch is enough here
    real, calls = api.train, []

    def stopped_in_fold_two(config, *args, **kwargs):
        calls.append(config.run)
        if len(calls) == 2:
            raise Interrupted(0, 1)  # what the trainer raises on Ctrl-C
        return real(config, *args, **kwargs)

    monkeypatch.setattr(api, "train", stopped_in_fold_two)
    args = ["review", str(run), str(data), "--folds", "2", "--no-report"]
    assert cli.run_cli(args) == 130
    said = " ".join(capsys.readouterr().out.split())
    assert "review stopped in fold 2/2: fold 1 is finished and kept" in said
    assert f"Continue with: lanner review {run} {data} --split train --folds 2" in said
    assert "lanner resume" not in said
    assert (run / "review" / "folds" / "fold1" / "predictions.json").is_file()
    monkeypatch.setattr(api, "train", real)
    assert cli.run_cli(args) == 0
    said = " ".join(capsys.readouterr().out.split())
    assert "review fold 1/2: reusing its finished predictions" in said and "review fold 2/2: training" in said
    assert json.loads((run / "review" / "review.json").read_text())["images"] == 24


def test_a_fixed_label_trains_the_folds_again(tmp_path):
    dataset = read_dataset(write_digit_folders(tmp_path / "digits", per_class=2))
    before = labels_digest(dataset)
    assert labels_digest(read_dataset(tmp_path / "digits")) == before  # the same labels: reused
    dataset.records[0].label = (dataset.records[0].label + 1) % len(dataset.classes)
    assert labels_digest(dataset) != before


def test_nothing_flagged_exports_nothing(detection_run, tmp_path, capsys):  # noqa: F811
    run, data = detection_run
    _earlier_review(run, data, [], DETECT_COLUMNS)
    out = tmp_path / "fix"
    assert cli.run_cli(["review", str(run), str(data), "--export", "labelme", str(out), "--no-report"]) == 0
    assert "nothing exported" in capsys.readouterr().out and not out.exists()


def test_a_spurious_box_is_marked_for_removal_over_the_labelled_box():
    record = ImageRecord(
        Path("a.png"), 100, 100, boxes=np.array([[10, 10, 40, 40]], float), labels=np.array([0])
    )
    row = {"path": "a.png", "kind": "spurious_box", "given": "cat", "suggested": "cat", "score": 0.5}
    row |= dict(zip(("x1", "y1", "x2", "y2"), (10.0, 10.0, 40.0, 40.0), strict=True))
    marked = DetectReviewer().marked(Dataset(["cat"], [record], "detect"), {"a.png": [row]}, "coco")
    (out,) = marked.records
    assert marked.classes == ["cat", REMOVE] and out.labels.tolist() == [0, 1]
    assert out.boxes.tolist() == [[10, 10, 40, 40]] * 2
    assert out.notes == ["", "lanner: spurious_box score 0.500, labelled cat"]
