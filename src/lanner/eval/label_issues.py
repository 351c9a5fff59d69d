"""Likely label errors from out-of-sample predictions (``lanner review``), for both tasks.

Classification follows confident learning (Northcutt et al. 2021): each class's threshold is the
mean probability the model gives that class on the images labelled with it (its self-confidence);
an image is flagged when the probability of its given label is below that label's threshold while
another class is above its own. The suggestion is the most probable such class; the score is the
margin p(suggested) - p(given) (-1..1, higher = more likely an error). This is written here rather
than taken from ``cleanlab``: the rule is a dozen lines of numpy, while cleanlab brings pandas,
scikit-learn and its own pruning defaults (``prune_by_noise_rate``) that rank differently.

Detection compares each image's labelled boxes with the model's boxes. A box counts as confident
when its score reaches its class's mean score among the predictions that found a labelled box of
their class (IoU >= .5, COCO-style greedy matching): the detection analogue of self-confidence.

* ``missing_box``: a confident prediction with no labelled box near it (IoU < ``NEAR``);
* ``wrong_class``: a labelled box that no confident prediction of its class finds but a confident
  one of another class covers (IoU >= ``MATCH``); the suggestion is that class;
* ``loose_box``: the best confident prediction of its class overlaps it only partly
  (``NEAR`` <= IoU < ``LOOSE``); the suggestion is the predicted box;
* ``spurious_box``: no prediction at all, of any class or score, touches it (IoU < ``TOUCH``), in a
  class the model does find elsewhere (one it never finds says nothing about this box).
"""

from __future__ import annotations

import csv
import io
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from lanner._io import write_text
from lanner.data.detections import Detections
from lanner.data.geometry import box_iou
from lanner.data.records import Dataset, ImageRecord
from lanner.eval.detection import greedy_match

MATCH, NEAR, LOOSE, TOUCH = 0.5, 0.3, 0.6, 0.1  # IoU levels of the detection rules above
SPURIOUS_WEIGHT = (
    0.5  # even good models miss objects: "nothing predicted here" ranks below a confident disagreement
)
DEFAULT_CONFIDENCE = 0.5  # a class no prediction found any box of has no self-confidence to go by
BASE_COLUMNS = ["path", "kind", "given", "suggested", "score"]
CLASSIFY_COLUMNS = [*BASE_COLUMNS, "given_prob", "suggested_prob"]
DETECT_COLUMNS = [*BASE_COLUMNS, "x1", "y1", "x2", "y2", "sx1", "sy1", "sx2", "sy2", "iou"]


@dataclass
class LabelIssue:
    """One likely label error. Detection: ``box`` is where it is (the labelled box, or the predicted
    one for a missing box), ``suggested_box`` the model's box (none for a spurious box)."""

    path: str
    kind: str  # wrong_label | missing_box | wrong_class | loose_box | spurious_box
    given: str
    suggested: str
    score: float  # higher = more likely a label error
    box: tuple[float, ...] | None = None
    suggested_box: tuple[float, ...] | None = None
    extra: dict | None = None  # given_prob / suggested_prob, iou

    def row(self) -> dict:
        """The CSV row (DETECT_COLUMNS / CLASSIFY_COLUMNS; absent values empty)."""
        row = {k: v for k, v in asdict(self).items() if k in BASE_COLUMNS}
        row["score"] = round(self.score, 5)
        for names, box in (("x1 y1 x2 y2", self.box), ("sx1 sy1 sx2 sy2", self.suggested_box)):
            row.update(
                zip(names.split(), [round(float(v), 2) for v in box] if box else [""] * 4, strict=True)
            )
        row.update({k: round(float(v), 5) for k, v in (self.extra or {}).items()})
        return row


def sort_issues(issues: list[LabelIssue]) -> list[LabelIssue]:
    """Most likely first; ties by path, then kind, so the order is the same on every run."""
    return sorted(issues, key=lambda i: (-i.score, i.path, i.kind))


def write_issues(path: Path, issues: list[LabelIssue], columns: list[str]) -> Path:
    """``path`` (label_issues.csv) written atomically, most likely first."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, columns, restval="", extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(issue.row() for issue in sort_issues(issues))
    return write_text(path, buf.getvalue())


def read_issues(path: Path) -> list[dict]:
    """label_issues.csv as rows; numbers as floats, empty cells as None."""
    with Path(path).open(newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    numeric = {"score", "given_prob", "suggested_prob", "iou", *DETECT_COLUMNS[5:]}
    return [{k: (float(v) if v and k in numeric else v or None) for k, v in r.items()} for r in rows]


# ------------------------------------------------------------------------------------ classification
def self_confidence(probs: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """[C] each class's mean probability over the images labelled with it (inf for a class without any:
    nothing can be suggested as it). ``probs`` [N, C], ``labels`` [N]."""
    counts = np.bincount(labels, minlength=probs.shape[1])  # [C]
    sums = np.zeros(probs.shape[1])
    np.add.at(sums, labels, probs[np.arange(len(labels)), labels])
    return np.where(counts > 0, sums / np.maximum(counts, 1), np.inf)


def classification_issues(
    paths: list[str], probs: np.ndarray, labels: np.ndarray, classes: list[str]
) -> list[LabelIssue]:
    """Images whose given label is below its class's threshold while another class is above its own."""
    probs, labels = np.asarray(probs, dtype=np.float64), np.asarray(labels, dtype=np.int64)
    if not len(labels):
        return []
    thresholds = self_confidence(probs, labels)  # [C]
    rows = np.arange(len(labels))
    given_p = probs[rows, labels]  # [N]
    others = np.where(probs >= thresholds, probs, -1.0)  # [N, C] only the confident classes
    others[rows, labels] = -1.0
    suggested = others.argmax(1)  # [N]
    flagged = (given_p < thresholds[labels]) & (others.max(1) >= 0)
    return [
        LabelIssue(
            paths[i],
            "wrong_label",
            classes[labels[i]],
            classes[suggested[i]],
            float(probs[i, suggested[i]] - given_p[i]),
            extra={"given_prob": given_p[i], "suggested_prob": probs[i, suggested[i]]},
        )  # fmt: skip
        for i in np.flatnonzero(flagged)
    ]


# ----------------------------------------------------------------------------------------- detection
def detection_confidence(records: list[ImageRecord], detections: list[Detections], num_classes: int):
    """[C] each class's mean score among its predictions that found a labelled box of that class
    (greedy matching in score order at IoU >= MATCH); NaN for a class with none (the model does not
    find that class at all)."""
    sums, counts = np.zeros(num_classes), np.zeros(num_classes)
    for record, det in zip(records, detections, strict=True):
        order = np.argsort(-det.scores, kind="stable")
        iou = box_iou(det.boxes[order], record.boxes)  # [P, G]
        same = det.labels[order][:, None] == record.labels[None, :]  # [P, G]
        free_det, free_gt = np.ones(len(order), bool), np.ones(len(record.labels), bool)
        for d, _ in greedy_match(iou, same, free_det, free_gt, MATCH):
            sums[det.labels[order[d]]] += det.scores[order[d]]
            counts[det.labels[order[d]]] += 1
    return np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)


def _box(values) -> tuple[float, ...]:
    return tuple(float(v) for v in values)


def _missing_boxes(record: ImageRecord, det: Detections, confident: np.ndarray, iou: np.ndarray, classes):
    """Confident predictions with no labelled box (of any class) near them."""
    near = iou.max(1) if iou.shape[1] else np.zeros(len(det))  # [P]
    return [
        LabelIssue(
            str(record.path),
            "missing_box",
            "",
            classes[det.labels[p]],
            float(det.scores[p]),
            _box(det.boxes[p]),
            _box(det.boxes[p]),
            {"iou": near[p]},
        )  # fmt: skip
        for p in np.flatnonzero(confident & (near < NEAR))
    ]


def _box_issue(record: ImageRecord, g: int, det: Detections, confident: np.ndarray, iou: np.ndarray,
               classes, found: np.ndarray):  # fmt: skip
    """The issue of labelled box ``g`` (or None): wrong class, loose box or spurious box, in that order.
    ``found`` [C]: whether the model finds any labelled box of each class."""
    label, overlap = int(record.labels[g]), iou[:, g]  # overlap [P]
    found_class = bool(found[label])
    mine = confident & (det.labels == label)
    best_same = overlap[mine].max() if mine.any() else 0.0
    if best_same >= LOOSE:
        return None
    issue = LabelIssue(str(record.path), "", classes[label], "", 0.0, _box(record.boxes[g]))
    other = np.flatnonzero(confident & (det.labels != label) & (overlap >= max(MATCH, best_same)))
    if len(other):
        p = other[np.argmax(det.scores[other])]
        issue.kind, issue.suggested, issue.score = "wrong_class", classes[det.labels[p]], float(det.scores[p])
    elif best_same >= NEAR:
        p = int(np.where(mine, overlap, -1.0).argmax())
        issue.kind, issue.suggested = "loose_box", classes[label]
        issue.score = float(det.scores[p] * (1.0 - overlap[p]))  # confident and far off: most likely loose
    elif not (overlap >= TOUCH).any() and found_class:  # a class the model never finds proves nothing
        evidence = float(det.scores.max(initial=0.0, where=overlap > 0))
        issue.kind, issue.suggested, issue.score = (
            "spurious_box",
            classes[label],
            SPURIOUS_WEIGHT * (1 - evidence),
        )
        return issue
    else:
        return None
    issue.suggested_box, issue.extra = _box(det.boxes[p]), {"iou": overlap[p]}
    return issue


def image_detection_issues(
    record: ImageRecord, det: Detections, thresholds: np.ndarray, classes: list[str]
) -> list[LabelIssue]:
    """The label issues of one image, given each class's confidence threshold ``thresholds`` [C]."""
    confident = det.scores >= np.nan_to_num(thresholds, nan=DEFAULT_CONFIDENCE)[det.labels]  # [P]
    iou = box_iou(det.boxes, record.boxes)  # [P, G]
    issues = _missing_boxes(record, det, confident, iou, classes)
    for g in range(len(record.labels)):
        if not (len(record.iscrowd) and record.iscrowd[g]):
            issue = _box_issue(record, g, det, confident, iou, classes, ~np.isnan(thresholds))
            issues += [issue] if issue is not None else []
    return issues


def detection_issues(dataset: Dataset, detections: list[Detections]) -> list[LabelIssue]:
    """Every image's label issues, with the thresholds learnt from all of them (detection_confidence)."""
    thresholds = detection_confidence(dataset.records, detections, len(dataset.classes))
    return [
        issue
        for record, det in zip(dataset.records, detections, strict=True)
        for issue in image_detection_issues(record, det, thresholds, dataset.classes)
    ]
