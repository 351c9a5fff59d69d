"""Unit tests of the HTML report: escaping, structure, size budget, tolerance of partial runs."""

from __future__ import annotations

import base64
import io
import json
import re
from pathlib import Path

import pytest
import report_fixtures as F
from PIL import Image

from lanner.report import build_report, collect, script_json
from lanner.report._builder import select_images
from lanner.tasks.classify.report import classify_badness
from lanner.tasks.detect.report import match_detections

DATA_RE = re.compile(r'<script type="application/json" id="report-data">(.*?)</script>', re.S)


def report_data(html: str) -> dict:
    return json.loads(DATA_RE.search(html).group(1))


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("report-unit")
    return {
        "classify": F.make_classify_run(root, n_images=150),
        "detect": F.make_detect_run(root),
        "xss": F.make_classify_run(root / "xss", n_images=20, xss=True),
        "partial": F.make_partial_run(root),
    }


# ------------------------------------------------------------------------------------------------ escaping
def test_script_json_escapes_everything_that_could_end_the_script():
    value = {"a": "</script><script>alert(1)</script>", "b": "<!-- & -->", "c": "\u2028\u2029", "<k>": [1.5]}
    text = script_json(value)
    assert not set("<>&") & set(text)
    assert "\u2028" not in text and "\u2029" not in text
    assert json.loads(text) == value


def test_xss_strings_never_appear_raw_in_the_html(runs):
    html = build_report(runs["xss"]).read_text(encoding="utf-8")
    for bad in (F.XSS_CLASS, F.XSS_FILE, F.XSS_CONFIG, F.XSS_RUN, "<img", "<svg"):
        assert bad not in html, bad
    # Exactly our two script elements and nothing that closes one early.
    assert html.count("</script>") == 2
    assert html.count("<script") == 2
    data = report_data(html)
    assert F.XSS_CLASS in data["classes"]
    assert data["config"]["notes"] == F.XSS_CONFIG
    assert any(img["name"] == F.XSS_FILE for img in data["gallery"]["images"])
    title = re.search(r"<title>(.*?)</title>", html).group(1)
    assert "&lt;img" in title and "&quot;" in title


def test_csp_forbids_external_loads_and_nonce_matches(runs):
    html = build_report(runs["detect"]).read_text(encoding="utf-8")
    csp = re.search(r'<meta http-equiv="Content-Security-Policy" content="([^"]+)">', html).group(1)
    assert "default-src 'none'" in csp and "img-src data:" in csp and "unsafe-inline" not in csp
    nonce = re.search(r"script-src 'nonce-([^']+)'", csp).group(1)
    assert f'<script nonce="{nonce}">' in html and f'<style nonce="{nonce}">' in html
    # No external resources of any kind (the only URL is the SVG namespace, which is not a load).
    assert re.findall(r"https?://[^\s\"')]+", html) == ["http://www.w3.org/2000/svg"]
    for pattern in ("@import", "url(", 'src="http', "<link", "fetch(", "XMLHttpRequest", "innerHTML"):
        assert pattern not in html, pattern


def test_a_new_nonce_per_report(runs):
    a, b = (build_report(runs["partial"], runs["partial"] / f"r{i}.html").read_text() for i in range(2))
    nonce = lambda h: re.search(r"'nonce-([^']+)'", h).group(1)  # noqa: E731
    assert nonce(a) != nonce(b)


# ----------------------------------------------------------------------------------------------- structure
def test_classification_report_structure(runs):
    out = build_report(runs["classify"])
    assert out == runs["classify"] / "report.html"
    data = report_data(out.read_text(encoding="utf-8"))
    assert data["task"] == "classify" and len(data["classes"]) == 10
    assert data["history"]["epoch"] == list(map(float, range(1, 15)))
    assert [s["reason"] for s in data["segments"]] == ["start", "resume"]
    assert data["hardware"]["gpu"].startswith("NVIDIA")
    assert data["data_check"]["problems"]
    assert data["metrics"]["confusion_matrix"] and data["problems"] == []
    gallery = data["gallery"]
    assert gallery["total"] == 150 and gallery["shown"] == 100 == len(gallery["images"])
    first = gallery["images"][0]
    assert {"gt_label", "pred_label", "score", "topk", "src", "width", "height"} <= set(first)


def test_gallery_is_worst_first_and_keeps_every_mistake(runs):
    preds = json.loads((runs["classify"] / "eval" / "predictions.json").read_text())["images"]
    wrong = sum(r["gt_label"] != r["pred_label"] for r in preds)
    assert 0 < wrong < 100
    images = collect(runs["classify"])["gallery"]["images"]
    flags = [img["gt_label"] != img["pred_label"] for img in images]
    assert flags == [True] * wrong + [False] * (len(images) - wrong)
    wrong_scores = [img["score"] for img in images[:wrong]]
    assert wrong_scores == sorted(wrong_scores, reverse=True)
    assert {img["gt_label"] for img in images} == set(range(10))


def test_embedded_images_are_downscaled_jpegs(runs):
    images = collect(runs["detect"], max_side=128)["gallery"]["images"]
    for img in images:
        assert img["src"].startswith("data:image/jpeg;base64,")
    decoded = Image.open(io.BytesIO(base64.b64decode(images[0]["src"].split(",", 1)[1])))
    assert decoded.format == "JPEG" and max(decoded.size) == 128
    assert (images[0]["width"], images[0]["height"]) == (320, 240)  # boxes stay in full-image pixels


def test_detection_report_structure(runs):
    data = report_data(build_report(runs["detect"]).read_text(encoding="utf-8"))
    assert data["task"] == "detect" and data["threshold"] == 0.5
    assert data["pr_curves"].startswith("data:image/png;base64,")
    assert len(data["metrics"]["confusion_matrix"]) == len(data["classes"]) + 1
    img = data["gallery"]["images"][0]
    assert len(img["pred_match"]) == len(img["pred_boxes"]) and len(img["gt_hit_score"]) == len(
        img["gt_boxes"]
    )
    badness = [i["badness"] for i in data["gallery"]["images"]]
    assert badness == sorted(badness, reverse=True) and badness[0][0] > 0


def test_partial_run_still_gets_a_report(runs):
    data = report_data(build_report(runs["partial"]).read_text(encoding="utf-8"))
    assert data["gallery"] is None and data["metrics"] == {} and data["problems"] == []
    history = data["history"]  # one epoch (see make_partial_run)
    assert history["epoch"] == [1] and history["val_acc"] == history["train_acc"] == [0.0]


def test_broken_and_missing_files_are_reported_not_fatal(tmp_path):
    run = tmp_path / "broken"
    run.mkdir()
    (run / "metrics.json").write_text("{not json")
    (run / "history.csv").write_text("epoch,segment,lr,train_loss,val_loss\n1,0,0.1,nan,\n")
    (run / "eval").mkdir()
    (run / "eval" / "predictions.json").write_text(
        json.dumps(
            {
                "task": "classify",
                "classes": ["a"],
                "images": [
                    {
                        "path": "gone.png",
                        "width": 50,
                        "height": 40,
                        "gt_label": 0,
                        "pred_label": 0,
                        "score": 0.9,
                    }
                ],
            }
        )
    )
    data = report_data(build_report(run).read_text(encoding="utf-8"))
    assert any("metrics.json" in p for p in data["problems"])
    assert any("could not be read" in p for p in data["problems"])
    assert data["history"]["train_loss"] == [None] and data["history"]["val_loss"] == [None]
    assert data["gallery"]["images"][0]["src"] is None


def test_missing_run_dir_is_a_clear_error(tmp_path):
    from lanner.errors import CheckpointError

    with pytest.raises(CheckpointError, match="not found"):
        build_report(tmp_path / "nope")


# -------------------------------------------------------------------------------------------------- size
def test_100_photo_sized_images_stay_under_15_mb(tmp_path):
    run = tmp_path / "big"
    (run / "eval").mkdir(parents=True)
    paths = F.make_heavy_images(tmp_path / "photos", 100)
    images = [
        {
            "path": str(p),
            "width": 1024,
            "height": 768,
            "gt_boxes": [[10, 10, 200, 200]],
            "gt_labels": [0],
            "pred_boxes": [[12, 12, 190, 210]],
            "pred_labels": [0],
            "pred_scores": [0.9],
        }
        for p in paths
    ]
    (run / "eval" / "predictions.json").write_text(
        json.dumps({"task": "detect", "classes": ["a"], "images": images})
    )
    out = build_report(run, max_images=100)
    size = out.stat().st_size
    print(f"report with 100 photo-sized images: {size / 1e6:.2f} MB")
    assert size < 15_000_000
    assert all(i["src"] for i in report_data(out.read_text())["gallery"]["images"])


# ----------------------------------------------------------------------------------------- error analysis
def test_matching_is_consistent_at_every_threshold():
    r = {
        "gt_boxes": [[0, 0, 10, 10], [20, 20, 30, 30], [40, 40, 50, 50]],
        "gt_labels": [0, 1, 0],
        "pred_boxes": [[0, 0, 10, 10], [1, 1, 10, 10], [20, 20, 30, 30], [60, 60, 70, 70]],
        "pred_labels": [0, 0, 0, 1],
        "pred_scores": [0.9, 0.95, 0.8, 0.3],
    }
    m = match_detections(r)
    # The 0.95 prediction takes gt 0; the 0.9 duplicate is a false positive; the 0.8 box has the wrong class.
    assert m["pred_match"] == [-1, 0, -1, -1]
    assert m["pred_wrong"] == [-1, -1, 1, -1]
    assert m["gt_hit_score"] == [0.95, None, None]


def test_select_images_keeps_each_class_and_sorts_worst_first():
    recs = [{"gt_label": 0, "pred_label": 1, "score": 0.5 + i / 100} for i in range(40)]
    recs += [{"gt_label": 1, "pred_label": 1, "score": 0.99}] * 3
    for r in recs:
        r["badness"] = classify_badness(r)
    chosen = select_images(recs, lambda r: {r.get("gt_label")}, 10)
    assert len(chosen) == 10 and any(r["gt_label"] == 1 for r in chosen)
    assert [r["badness"] for r in chosen] == sorted((r["badness"] for r in chosen), reverse=True)
