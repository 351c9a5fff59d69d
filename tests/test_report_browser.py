"""The report in a real browser (Playwright + Debian's chromium, headless), opened from disk.

Never skipped: without chromium these tests fail and say how to install it. Screenshots go to
``test-artifacts/`` (gitignored) for a human look.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import report_fixtures as F

from lanner.data.detections import Detections
from lanner.data.records import Dataset, ImageRecord
from lanner.eval.label_issues import DETECT_COLUMNS, detection_issues, sort_issues, write_issues
from lanner.report import build_report
from lanner.report._builder import MAX_LABEL_ISSUES
from lanner.rundir import RunDir

REPO = Path(__file__).resolve().parents[1]
ARTIFACTS = REPO / "test-artifacts"
CHROMIUM = os.environ.get("LANNER_CHROMIUM", "/usr/bin/chromium")
ARGS = ["--no-sandbox", "--headless", "--disable-gpu", "--disable-background-networking"]
# Records every CSP violation the page would see (a blocked inline script or external load).
CSP_PROBE = (
    "window.__csp = []; document.addEventListener('securitypolicyviolation', "
    "e => window.__csp.push(e.violatedDirective + ' ' + e.blockedURI));"
)


@pytest.fixture(scope="module")
def browser():
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail("playwright is not installed: pip install playwright (the browser is /usr/bin/chromium)")
    if not (Path(CHROMIUM).exists() or shutil.which(CHROMIUM)):
        pytest.fail(f"chromium not found at {CHROMIUM}: apt-get install -y chromium (or set LANNER_CHROMIUM)")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield b
        b.close()


@pytest.fixture(scope="module")
def reports(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("report-browser")
    runs = {
        "classify": F.make_classify_run(root, n_images=60),
        "detect": F.make_detect_run(root, n_images=24),
        "xss": F.make_classify_run(root / "xss", n_images=12, xss=True),
        "partial": F.make_partial_run(root),
    }
    return {name: build_report(run) for name, run in runs.items()}


class Opened:
    """A page showing one report, with everything it did recorded."""

    def __init__(self, browser, path: Path):
        self.page = browser.new_page(viewport={"width": 1280, "height": 900})
        self.errors, self.requests, self.dialogs = [], [], []
        self.page.on(
            "console", lambda m: self.errors.append(m.text) if m.type in ("error", "warning") else None
        )
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))
        self.page.on("request", lambda r: self.requests.append(r.url))
        self.page.on("dialog", lambda d: (self.dialogs.append(d.message), d.dismiss()))
        self.page.add_init_script(CSP_PROBE)
        self.page.goto(path.as_uri())
        self.page.wait_for_selector("body[data-ready='1']", timeout=10_000)

    def js(self, expr: str):
        return self.page.evaluate(expr)

    def grid(self, key: str) -> int:
        return int(self.js(f"document.getElementById('gallery-grid').dataset.{key}"))

    def select(self, selector: str, value: str) -> None:
        self.page.select_option(selector, value)

    def slide(self, value: float) -> None:
        self.js(
            f"(() => {{ const s = document.getElementById('threshold'); s.value = '{value}';"
            " s.dispatchEvent(new Event('input')); })()"
        )

    def assert_clean(self) -> None:
        assert self.errors == [], self.errors
        assert self.dialogs == []
        assert self.js("window.__csp") == []
        outside = [u for u in self.requests if not u.startswith(("file://", "data:"))]
        assert outside == [], outside
        assert len([u for u in self.requests if u.startswith("file://")]) == 1

    def shot(self, name: str, full_page: bool = True) -> None:
        ARTIFACTS.mkdir(exist_ok=True)
        self.page.screenshot(path=str(ARTIFACTS / f"report-{name}.png"), full_page=full_page)


def _predictions(report: Path) -> list[dict]:
    return json.loads((report.parent / "eval" / "predictions.json").read_text())["images"]


def test_classification_report(browser, reports):
    r = Opened(browser, reports["classify"])
    preds = _predictions(reports["classify"])
    assert r.js("document.querySelectorAll('#gallery-grid .tile').length") == len(preds) == r.grid("visible")
    # Sections, charts and tables are drawn from data.
    assert r.js("document.querySelectorAll('svg.chart polyline').length") == 5  # 2 losses, 2 metrics, lr
    assert r.js("document.querySelectorAll('svg.chart line.resume').length") == 3  # one per chart
    assert r.js("document.querySelectorAll('#per-class tr').length") == 1 + 10 + 2
    assert r.js("document.querySelectorAll('#confusion td').length") == 100
    # The data check lists its problems as readable lines (the fixture has one problem, one warning).
    assert r.js("document.querySelectorAll('#data-problems li').length") == 2
    # Every embedded image decodes.
    assert r.js("""Promise.all(Array.from(document.querySelectorAll('#gallery-grid image')).map(i =>
        new Promise(ok => { const im = new Image(); im.onload = () => ok(im.naturalWidth);
        im.onerror = () => ok(0); im.src = i.getAttribute('href'); }))).then(ws => ws.every(w => w > 0))""")
    r.shot("classify")

    wrong = sum(p["gt_label"] != p["pred_label"] for p in preds)
    r.select("#filter-kind", "misclassified")
    assert r.grid("visible") == wrong > 0
    r.select("#filter-kind", "all")
    r.select("#filter-class", "3")
    threes = sum(3 in (p["gt_label"], p["pred_label"]) for p in preds)
    assert r.grid("visible") == threes
    r.page.uncheck("#toggle-pred")
    assert r.js(
        "Array.from(document.querySelectorAll('.tile:not([hidden]) .pred-line')).every(e => e.hidden)"
    )
    r.assert_clean()


def test_detection_report_boxes_slider_filters_and_zoom(browser, reports):
    r = Opened(browser, reports["detect"])
    preds = _predictions(reports["detect"])
    n_gt = sum(len(p["gt_boxes"]) for p in preds)
    n_pred = sum(len(p["pred_boxes"]) for p in preds)
    rects = "document.querySelectorAll('#gallery-grid .tile:not([hidden]) rect.box').length"
    assert r.js("document.querySelectorAll('#gallery-grid .tile').length") == len(preds)
    assert r.grid("boxes") == r.js(rects) == F.expected_boxes(reports["detect"].parent, 0.5)
    assert r.js("document.querySelector('#pr-curves').naturalWidth") > 0
    assert r.js("document.querySelectorAll('#error-breakdown tr').length") == 1 + 6  # the TIDE kinds
    r.shot("detect")

    r.slide(0.0)
    assert r.js(rects) == n_gt + n_pred
    r.slide(1.0)
    assert r.js(rects) == n_gt
    assert (
        r.js("document.querySelectorAll('#gallery-grid rect.box.gt.miss').length") == n_gt
    )  # all missed now
    r.slide(0.5)
    r.page.uncheck("#toggle-gt")
    assert r.js(rects) == F.expected_boxes(reports["detect"].parent, 0.5) - n_gt
    r.page.check("#toggle-gt")

    # Error-kind filters: the shown tiles are exactly those with such an error, and they draw one.
    for kind, css in (("fp", "rect.box.fp"), ("wrong", "rect.box.wrong"), ("miss", "rect.box.miss")):
        r.select("#filter-kind", kind)
        shown = r.grid("visible")
        assert 0 < shown < len(preds), kind
        assert r.js(
            f"Array.from(document.querySelectorAll('#gallery-grid .tile:not([hidden])'))"
            f".every(t => t.querySelector('{css}'))"
        ), kind
    r.select("#filter-kind", "all")

    r.select("#filter-class", "1")
    classes = r.js(
        "Array.from(document.querySelectorAll('#gallery-grid .tile:not([hidden]) rect.box'))"
        ".map(b => b.dataset.class)"
    )
    assert classes and set(classes) == {"1"}
    assert r.grid("visible") < len(preds)
    r.select("#filter-class", "all")

    # Click -> zoomable full view; the wheel zooms in (the viewBox shrinks).
    r.page.click("#gallery-grid .tile svg")
    assert r.page.is_visible("#modal")
    assert r.js("document.querySelectorAll('#modal-body rect.box').length") > 0
    before = r.js("document.querySelector('#modal-body svg').viewBox.baseVal.width")
    r.page.hover("#modal-body svg")
    r.page.mouse.wheel(0, -300)
    r.page.wait_for_function(f"document.querySelector('#modal-body svg').viewBox.baseVal.width < {before}")
    r.shot("detect-zoom", full_page=False)
    r.page.keyboard.press("Escape")
    assert not r.page.is_visible("#modal")
    r.assert_clean()


def test_xss_dataset_runs_no_script(browser, reports):
    r = Opened(browser, reports["xss"])
    r.shot("xss")
    r.page.click("#gallery-grid .tile svg")  # the zoom view draws more nodes from the data
    r.page.keyboard.press("Escape")
    assert r.js("typeof window.__xss") == "undefined"
    assert r.js("document.querySelectorAll('img[src=x], svg[onload], [onerror]').length") == 0
    body = r.page.inner_text("body")
    assert F.XSS_CLASS in body
    assert F.XSS_FILE in body
    assert F.XSS_CONFIG in r.js("document.getElementById('summary').textContent")
    assert r.page.title() == "lanner report: " + F.XSS_RUN
    r.assert_clean()


# Each chart's y ticks (value, y), x ticks, and points (value, cy) as drawn.
CHART_AXES = """Array.from(document.querySelectorAll('svg.chart')).map(svg => {
  const all = (css) => Array.from(svg.querySelectorAll(css));
  const num = (e, a) => Number(e.getAttribute(a));
  return {
    title: svg.getAttribute('aria-label'),
    y: all('text[text-anchor=end]').map(t => [Number(t.textContent), num(t, 'y') - 4]),
    x: all('text[text-anchor=middle]').map(t => t.textContent).filter(t => t !== 'epoch'),
    points: all('circle').map(c => [Number(c.textContent.split(': ')[1]), num(c, 'cy')]),
  };
})"""


def test_run_without_eval_renders_what_exists(browser, reports):
    r = Opened(browser, reports["partial"])
    assert r.js("document.querySelectorAll('svg.chart polyline').length") == 5  # 2 losses, 2 metrics, lr
    assert "No eval/predictions.json yet" in r.page.inner_text("#gallery")
    # One epoch: each chart's axis is a band around its single point(s), never below 0 for values that
    # are not (the metrics are both 0, the LR one positive value).
    charts = r.js(CHART_AXES)
    assert [c["title"] for c in charts] == ["Loss", "Metrics: train vs validation", "Learning rate"]
    for chart in charts:
        ticks, points = sorted(chart["y"]), chart["points"]
        assert chart["x"] == ["1"], chart
        assert len(ticks) >= 2 and ticks[0][0] >= 0, chart  # no negative loss, accuracy or LR
        assert [y for _, y in ticks] == sorted((y for _, y in ticks), reverse=True), chart  # up = more
        assert all(12 <= cy <= 240 - 34 for _, cy in points), chart  # inside the plot area
    for single in charts[1:]:  # one value each: ticks on both sides of it
        ticks = sorted(single["y"])
        assert all(ticks[0][0] <= v <= ticks[-1][0] for v, _ in single["points"]), single
    metric, lr = charts[1], charts[2]
    assert [v for v, _ in metric["points"]] == [0, 0] and max(v for v, _ in metric["y"]) <= 1
    assert len(lr["points"]) == 1 and lr["y"][0][0] > 0  # around the LR, not from 0 (or -0.5)
    r.shot("partial")
    r.assert_clean()


def test_likely_label_errors_section_and_gallery_filter(browser, tmp_path):
    """review/label_issues.csv (the review rules on the fixture's boxes): its own section, with the
    given box and the suggestion drawn, a kind filter, and the gallery's "likely label errors" filter."""
    run = F.make_detect_run(tmp_path)
    images = json.loads((run / "eval" / "predictions.json").read_text())["images"]
    records = [
        ImageRecord(
            Path(i["path"]),
            i["width"],
            i["height"],
            boxes=np.array(i["gt_boxes"], float).reshape(-1, 4),
            labels=np.array(i["gt_labels"], int),
        )  # fmt: skip
        for i in images
    ]
    detections = [Detections(i["pred_boxes"], i["pred_scores"], i["pred_labels"]) for i in images]
    issues = sort_issues(detection_issues(Dataset(F.DET_CLASSES, records, "detect"), detections))
    write_issues(RunDir(run).label_issues, issues, DETECT_COLUMNS)
    r = Opened(browser, build_report(run))
    shown = issues[:MAX_LABEL_ISSUES]
    tiles = "document.querySelectorAll('#issues-grid .tile:not([hidden])').length"
    assert r.js(tiles) == len(shown) > 0 and len({i.kind for i in shown}) >= 2
    assert r.js("document.querySelectorAll('#issues-grid rect.box.suggest').length") == sum(
        i.suggested_box is not None for i in shown
    )
    kind = sorted({i.kind for i in shown})[0]
    r.select("#issue-kind", kind)
    assert r.js(tiles) == sum(i.kind == kind for i in shown)
    r.shot("label-issues")
    r.select("#filter-kind", "label_issue")
    assert r.grid("visible") == len({i.path for i in issues})
    r.assert_clean()
