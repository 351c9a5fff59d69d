"""Tiled (sliced) detection on large images: lanner vs SAHI vs a bare model loop, in one run.

    .venv/bin/pip install sahi   # once
    .venv/bin/python benchmarks/tiled_vs_sahi.py --run RUN_DIR --data ANN_JSON \
        [--tile 256 --overlap 0.25] [--images N] [--repeats K] [--split val] \
        [--device cpu|cuda] [--precision 32|bf16|16-mixed]

The same trained detector (``load_run``), the same images (the ``--split`` records of ``--data``),
tile size and overlap go through four pipelines, each end to end from image paths to per-image
detections in memory:

* **lanner**: :func:`lanner.predict.tiled.predict_tiled` (greedy NMM / IoS 0.5; NMS for mAP too)
  on the model as ``lanner predict`` runs it: :func:`lanner.models.inference.inference_model`
  (BatchNorm folded into the convolutions, channels-last, autocast at ``--precision``), with the
  tile batch size ``lanner predict`` picks for the device;
* **SAHI**: ``sahi.predict.get_sliced_prediction`` with its torchvision wrapper, handed the model
  object as trained (its own loader would build a model and fetch weights), GREEDYNMM / IOS 0.5,
  no full-image pass, at the best of the ``batch_size`` values it accepts: SAHI as its users run it;
* **SAHI + lanner's model**: the same, handed lanner's inference copy of the model instead, with
  the model's own score floor raised to ``--score-threshold`` as lanner's pipeline does
  (:func:`lanner.predict.tiled.score_floor`), so the difference to lanner is the pipeline alone
  (batching, decoding, merging);
* **bare**: decode each image once, cut the same windows, stack them into batches, call lanner's
  inference copy (score floor raised too) under ``torch.inference_mode``; no merging, no threads of
  our own: the limit.

Fairness choices, all in SAHI's favour or neutral: SAHI's torchvision wrapper calls the model with
autograd on, so its call is wrapped in ``torch.inference_mode`` here like the other two; all three
keep detections down to the same ``--score-threshold`` (SAHI would switch itself to NMS/IoU below
0.1, so that switch is turned off to keep GREEDYNMM/IOS); repeats are interleaved
(bare, lanner, SAHI, bare, ...) so a busy neighbour on the machine hurts all three alike, and the
best of ``--repeats`` is reported. Before timing, the script checks that SAHI cuts the same windows,
feeds the model the same pixels (one tile, boxes compared exactly) and maps labels the same way.
Without ``--run`` an untrained ``fcos_resnet18`` is used: timings only, mAP meaningless.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import torch

from lanner.data.detections import Detections
from lanner.data.formats import read_dataset
from lanner.data.records import Dataset
from lanner.data.tiling import decode_upright, overlap_pixels, tile_windows
from lanner.eval.detection import evaluate_detections
from lanner.predict.tiled import Tiling, predict_tiled, score_floor

MERGE_THRESHOLD = 0.5  # GREEDYNMM / IOS 0.5 for both lanner and SAHI (SAHI's defaults)
RESULTS = Path(__file__).resolve().parent / "results"


# ------------------------------------------------------------------------------------------ setup
def load_detector(run: Path | None, tile: int) -> tuple[torch.nn.Module, list[str] | None, dict]:
    """The trained model of ``run`` (eval mode, CPU), or an untrained one for timing-only runs."""
    if run is None:
        from lanner.models import create_model

        model = create_model("detect", "fcos_resnet18", num_classes=4, image_size=tile).eval()
        return model, None, {"model": "fcos_resnet18 (untrained)", "image_size": tile}
    from lanner.tasks.loading import load_run

    loaded = load_run(run)
    info = {
        "model": loaded.config.model,
        "image_size": loaded.meta.get("image_size"),
        "tiling": loaded.meta.get("tiling"),
        "checkpoint": str(loaded.checkpoint),
    }
    return loaded.model.eval(), loaded.classes, info


def evaluation_set(data: Path, split: str, limit: int | None) -> tuple[Dataset, str]:
    """The records to predict, and how they were picked.

    A single COCO json (``lanner.demo_detect.write_digit_canvases``) carries no split, so files
    named ``<split>_*`` stand in for the split there.
    """
    full = read_dataset(data)
    records, rule = full.subset(split).records, f"split == {split!r}"
    if not records and all(r.split is None for r in full.records):
        records = [r for r in full.records if Path(r.path).name.startswith(f"{split}_")]
        rule = f"no splits in the data: file names starting with {split + '_'!r}"
    records = records[:limit] if limit else records
    if not records:
        raise SystemExit(f"no {split!r} records in {data}")
    return Dataset(full.classes, records, "detect", full.root, full.format), rule


def label_offset(model: torch.nn.Module) -> int:
    # Background-class architectures emit class index + 1; lanner's classes are 0..C-1.
    return int(getattr(model, "label_offset", 0))


# ---------------------------------------------------------------------------------------- lanner
def run_lanner(model, paths: list[Path], args, batch_size: int, merge: str = "nmm") -> list[Detections]:
    offset = label_offset(model)
    tiling = Tiling(args.tile, args.overlap, merge, MERGE_THRESHOLD, "ios", batch_size)
    stream = predict_tiled(
        model,
        paths,
        tiling,
        device=args.device,
        score_threshold=args.score_threshold,
    )
    return [Detections(boxes, scores, labels - offset) for _, boxes, scores, labels in stream]


# ------------------------------------------------------------------------------------------ bare
def _tiles(paths: list[Path], tile: int, overlap: float) -> Iterator[torch.Tensor]:
    """[h, w, 3] uint8 tiles of every image, in order; each image decoded once, like lanner."""
    for path in paths:
        img = decode_upright(path)
        for window in tile_windows(img.width, img.height, tile, overlap):
            yield torch.from_numpy(np.array(img.crop(tuple(int(v) for v in window)), dtype=np.uint8))


def run_bare(model, paths: list[Path], args, batch_size: int) -> dict:
    """Model calls only, batches spanning image boundaries as in lanner; returns timing parts."""
    model_s, outputs = 0.0, 0
    batch: list[torch.Tensor] = []

    def flush() -> float:
        t0 = time.perf_counter()
        with torch.inference_mode():
            inputs = [t.to(args.device).permute(2, 0, 1).float().div_(255.0) for t in batch]
            model(inputs)  # outputs dropped: no merge
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()
        return time.perf_counter() - t0

    for pixels in _tiles(paths, args.tile, args.overlap):
        batch.append(pixels)
        if len(batch) == batch_size:
            model_s += flush()
            outputs += len(batch)
            batch = []
    if batch:
        model_s += flush()
        outputs += len(batch)
    return {"model_s": model_s, "tiles": outputs}


# ------------------------------------------------------------------------------------------ SAHI
def sahi_model(model, classes: list[str], score_threshold: float, device: str):
    """SAHI's torchvision wrapper around our model object; category ids are the model's raw labels."""
    from sahi.models.torchvision import TorchVisionDetectionModel

    offset = label_offset(model)
    mapping = {str(i + offset): name for i, name in enumerate(classes)}
    # image_size stays None: otherwise SAHI rewrites model.transform's min/max size per image.
    return TorchVisionDetectionModel(
        model=model, confidence_threshold=score_threshold, category_mapping=mapping, device=device
    )


def _sahi_detections(result, offset: int) -> Detections:
    preds = result.object_prediction_list
    boxes = np.array([p.bbox.to_xyxy() for p in preds], np.float64).reshape(-1, 4)
    scores = np.array([p.score.value for p in preds], np.float64)
    labels = np.array([p.category.id - offset for p in preds], np.int64)
    return Detections(boxes, scores, labels)


def run_sahi(detector, paths: list[Path], args, batch_size: int, durations: dict | None = None) -> list:
    """SAHI's detections per image; ``durations`` collects SAHI's own slice/prediction/merge seconds."""
    from sahi.predict import get_sliced_prediction

    offset = label_offset(detector.model)
    out = []
    for path in paths:
        # inference_mode: SAHI's torchvision wrapper would otherwise run the model with autograd on.
        with torch.inference_mode():
            result = get_sliced_prediction(
                str(path),
                detector,
                slice_height=args.tile,
                slice_width=args.tile,
                overlap_height_ratio=args.overlap,
                overlap_width_ratio=args.overlap,
                perform_standard_pred=False,
                postprocess_type="GREEDYNMM",
                postprocess_match_metric="IOS",
                postprocess_match_threshold=MERGE_THRESHOLD,
                force_postprocess_type=True,  # keep GREEDYNMM/IOS at a low score threshold
                verbose=0,
                batch_size=batch_size,
            )
        out.append(_sahi_detections(result, offset))
        for part, seconds in result.durations_in_seconds.items():
            if durations is not None:
                durations[part] = durations.get(part, 0.0) + seconds
    return out


def sahi_batches_natively() -> bool:
    """Whether SAHI's torchvision wrapper runs a batch in one model call.

    If it does not override ``perform_batch_inference``, SAHI's base class runs the slices of a
    "batch" one model call at a time, so ``batch_size`` only changes the grouping.
    """
    from sahi.models.base import DetectionModel
    from sahi.models.torchvision import TorchVisionDetectionModel

    return TorchVisionDetectionModel.perform_batch_inference is not DetectionModel.perform_batch_inference


def sahi_backend() -> str:
    from sahi.postprocess.backends import resolve_backend

    return resolve_backend()


def sahi_batch_sizes(candidates: list[int]) -> list[int]:
    """The candidates SAHI accepts: older releases have no ``batch_size`` in sliced prediction."""
    import inspect

    from sahi.predict import get_sliced_prediction

    return candidates if "batch_size" in inspect.signature(get_sliced_prediction).parameters else [1]


def best_sahi_batch(detector, paths: list[Path], args) -> tuple[int, dict]:
    """Time each accepted batch size once on the first image; the fastest is used for the repeats."""
    # Untimed warm-up: SAHI's first sliced call imports its Ultralytics wrapper (and Ultralytics
    # itself when installed), which once took ~90 s here and would be charged to the first size.
    run_sahi(detector, paths[:1], args, 1)
    timings = {}
    for size in sahi_batch_sizes(args.sahi_batch_sizes):
        timings[size] = timed(lambda size=size: run_sahi(detector, paths[:1], args, size))[0]
    return min(timings, key=timings.get), {str(k): round(v, 3) for k, v in timings.items()}


# ------------------------------------------------------------------------------------- sanity checks
def check_windows(width: int, height: int, tile: int, overlap: float) -> bool:
    from sahi.slicing import get_slice_bboxes

    sahi = get_slice_bboxes(height, width, tile, tile, False, overlap, overlap)
    ours = tile_windows(width, height, tile, overlap).tolist()
    return sorted(map(tuple, sahi)) == sorted(map(tuple, ours))


def check_one_tile(model, detector, path: Path, tile: int, overlap: float) -> dict:
    """SAHI's wrapper vs a direct model call on the busiest tile: same pixels in, same boxes out."""
    img = decode_upright(path)
    windows = tile_windows(img.width, img.height, tile, overlap)
    crops = [np.array(img.crop(tuple(int(v) for v in w))) for w in windows]
    device = next(model.parameters()).device
    with torch.inference_mode():
        direct = model([torch.from_numpy(c).to(device).permute(2, 0, 1).float() / 255.0 for c in crops])
        direct = [{k: v.cpu() for k, v in d.items()} for d in direct]
    busiest = int(np.argmax([len(d["scores"]) for d in direct]))
    ref = direct[busiest]
    keep = ref["scores"] > detector.confidence_threshold  # SAHI keeps score > threshold
    with torch.inference_mode():
        detector.perform_inference(crops[busiest])
        detector.convert_original_predictions(shift_amount=[[0, 0]], full_shape=None)
    preds = detector.object_prediction_list
    sahi_boxes = np.array([p.bbox.to_xyxy() for p in preds], np.float64).reshape(-1, 4)
    sahi_labels = np.array([p.category.id for p in preds], np.int64)
    ref_boxes = ref["boxes"][keep].double().numpy()
    same_count = len(sahi_boxes) == len(ref_boxes)
    return {
        "tile_window": [int(v) for v in windows[busiest]],
        "detections": int(len(ref_boxes)),
        "same_count": same_count,
        "max_box_diff_px": float(np.abs(sahi_boxes - ref_boxes).max())
        if same_count and len(ref_boxes)
        else 0.0,
        "same_labels": bool(same_count and np.array_equal(sahi_labels, ref["labels"][keep].numpy())),
    }


def agreement(a: Detections, b: Detections, min_score: float = 0.3) -> dict:
    """Of b's confident boxes, the share a has too: a box with IoU >= 0.5, and one of the same class."""
    from torchvision.ops import box_iou

    a_keep, b_keep = a.scores >= min_score, b.scores >= min_score
    if not b_keep.any() or not a_keep.any():
        return {"min_score": min_score, "boxes": int(b_keep.sum()), "matched": 0.0, "same_class": 0.0}
    iou = box_iou(torch.from_numpy(b.boxes[b_keep]), torch.from_numpy(a.boxes[a_keep])).numpy()
    matched = (iou >= 0.5).any(1)
    same_label = b.labels[b_keep][:, None] == a.labels[a_keep][None, :]
    same = ((iou >= 0.5) & same_label).any(1)
    return {
        "min_score": min_score,
        "boxes": int(b_keep.sum()),
        "matched": round(float(matched.mean()), 4),
        "same_class": round(float(same.mean()), 4),
    }


# ---------------------------------------------------------------------------------------- timing
def timed(fn: Callable):
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def coco(dataset: Dataset, detections: list[Detections]) -> dict:
    m = evaluate_detections(dataset, detections)
    return {"map50": m["map50"], "map50_95": m["map"]}


def interleaved_repeats(fast, detectors: dict, paths, args, batch: int, sahi_batch: int) -> tuple[dict, dict]:
    """Seconds per repeat for each pipeline, interleaved; plus the last repeat's detections.

    ``detectors``: SAHI wrappers by pipeline name (``sahi``: the model as trained, ``sahi_fast``:
    lanner's inference copy).
    """
    seconds: dict[str, list[float]] = {"bare": [], "lanner": [], **{name: [] for name in detectors}}
    bare_model_s: list[float] = []
    last: dict = {}
    for r in range(args.repeats):
        with score_floor(fast, args.score_threshold):  # as lanner's own pipeline does
            s, parts = timed(lambda: run_bare(fast, paths, args, batch))
        seconds["bare"].append(s)
        bare_model_s.append(parts["model_s"])
        s, last["lanner"] = timed(lambda: run_lanner(fast, paths, args, batch))
        seconds["lanner"].append(s)
        for name, detector in detectors.items():
            last[f"{name}_durations"] = {}
            floor = args.score_threshold if name == "sahi_fast" else 0.0  # everything lanner does
            with score_floor(detector.model, floor):
                s, last[name] = timed(
                    lambda d=detector, n=name: run_sahi(d, paths, args, sahi_batch, last[f"{n}_durations"])
                )
            seconds[name].append(s)
        print(f"repeat {r + 1}/{args.repeats}: " + ", ".join(f"{k} {v[-1]:.2f}s" for k, v in seconds.items()))
    seconds["bare_model_only"] = bare_model_s
    return seconds, last


def summarise(seconds: dict, megapixels: float) -> dict:
    out = {}
    for name, values in seconds.items():
        best = min(values)
        out[name] = {
            "seconds_best": round(best, 3),
            "seconds_median": round(float(np.median(values)), 3),
            "seconds_all": [round(v, 3) for v in values],
            "megapixels_per_s": round(megapixels / best, 3),
        }
    return out


# ------------------------------------------------------------------------------------------- main
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--run", type=Path, help="trained detector run dir (omit: untrained, timing only)")
    p.add_argument("--data", type=Path, required=True, help="dataset (e.g. COCO annotations.json)")
    p.add_argument("--split", default="val")
    p.add_argument("--tile", type=int, default=256)
    p.add_argument("--overlap", type=float, default=0.25)
    p.add_argument("--images", type=int, default=None, help="first N images of the split (default all)")
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=None, help="lanner/bare (default: lanner predict's)")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N")
    p.add_argument("--precision", default="32", help="lanner's inference precision: 32, bf16, 16-mixed")
    p.add_argument("--sahi-batch-sizes", type=lambda s: [int(v) for v in s.split(",")], default=[1, 4, 8])
    p.add_argument("--score-threshold", type=float, default=0.01, help="kept by all (model floor 0.01)")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default torch's)")
    p.add_argument("--out", type=Path, default=RESULTS / "tiled_vs_sahi.json")
    p.add_argument("--md", type=Path, default=RESULTS / "tiled_vs_sahi.md")
    return p.parse_args(argv)


def machine() -> dict:
    return {
        "cpu": platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "load_avg_at_start": [round(v, 2) for v in os.getloadavg()],
        "torch": torch.__version__,
        "python": platform.python_version(),
        "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else "none on this machine",
    }


def sanity(model, fast, detectors: dict, dataset: Dataset, args) -> dict:
    first = Path(dataset.records[0].path)
    w, h = dataset.records[0].width, dataset.records[0].height
    return {
        "same_windows": check_windows(w, h, args.tile, args.overlap),
        "one_tile_sahi_vs_model": check_one_tile(model, detectors["sahi"], first, args.tile, args.overlap),
        "one_tile_sahi_vs_inference_copy": check_one_tile(
            fast, detectors["sahi_fast"], first, args.tile, args.overlap
        ),
    }


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    import sahi

    from lanner.models.inference import inference_model
    from lanner.predict.tiled import tile_batch_size

    model, classes, model_info = load_detector(args.run, args.tile)
    model = model.to(args.device)
    fast = inference_model(model, args.device, args.precision)
    dataset, split_rule = evaluation_set(args.data, args.split, args.images)
    paths = [Path(r.path) for r in dataset.records]
    megapixels = sum(r.width * r.height for r in dataset.records) / 1e6
    names = classes or list(dataset.classes)
    detectors = {
        "sahi": sahi_model(model, names, args.score_threshold, args.device),
        "sahi_fast": sahi_model(fast, names, args.score_threshold, args.device),
    }
    info = {"machine": machine(), "model": model_info, "sahi": sahi.__version__}

    checks = sanity(model, fast, detectors, dataset, args)
    print("sanity:", json.dumps(checks))
    batch = args.batch_size or tile_batch_size(fast, args.tile, torch.device(args.device))
    sahi_batch, sahi_sweep = best_sahi_batch(detectors["sahi"], paths, args)
    print(f"batch size lanner/bare {batch}; SAHI per batch size (1 image): {sahi_sweep} -> {sahi_batch}")

    seconds, last = interleaved_repeats(fast, detectors, paths, args, batch, sahi_batch)
    nms_s, lanner_nms = timed(lambda: run_lanner(fast, paths, args, batch, merge="nms"))
    timing = summarise(seconds, megapixels)
    timing["lanner_nms_once"] = {"seconds": round(nms_s, 3), "megapixels_per_s": round(megapixels / nms_s, 3)}
    first = dataset.records[0]
    tiles_per_image = len(tile_windows(first.width, first.height, args.tile, args.overlap))

    def ratio(a: str, b: str, key: str = "seconds_best") -> float:
        return round(timing[a][key] / timing[b][key], 3)

    result = {
        "command": " ".join(shlex.quote(a) for a in [sys.executable, *sys.argv]),
        **info,
        "device": args.device,
        "precision": args.precision,
        "data": str(args.data),
        "split": args.split,
        "records": split_rule,
        "images": len(paths),
        "megapixels": round(megapixels, 3),
        "tile": args.tile,
        "overlap": args.overlap,
        "overlap_px": overlap_pixels(args.tile, args.overlap),
        "tiles_first_image": tiles_per_image,
        "score_threshold": args.score_threshold,
        "merge": f"greedy NMM, IoS {MERGE_THRESHOLD}",
        "batch_size_lanner_bare": batch,
        "batch_size_from": "--batch-size" if args.batch_size else "tile_batch_size (lanner predict's choice)",
        "sahi_batch_sweep_s_first_image": sahi_sweep,
        "sahi_batch_size": sahi_batch,
        "sahi_torchvision_batches_natively": sahi_batches_natively(),
        "sahi_postprocess_backend": sahi_backend(),
        "sahi_own_breakdown_s_last_repeat": {k: round(v, 3) for k, v in last["sahi_durations"].items()},
        "repeats": args.repeats,
        "sanity": {**checks, "lanner_vs_sahi_first_image": agreement(last["lanner"][0], last["sahi"][0])},
        "timing": timing,
        "ratios": {
            "lanner_over_bare_time": ratio("lanner", "bare"),
            "lanner_over_bare_model_only_time": ratio("lanner", "bare_model_only"),
            "lanner_over_sahi_throughput": ratio("lanner", "sahi", "megapixels_per_s"),
            "lanner_over_sahi_fast_throughput": ratio("lanner", "sahi_fast", "megapixels_per_s"),
        },
        "map": {
            "lanner_nmm": coco(dataset, last["lanner"]),
            "lanner_nms": coco(dataset, lanner_nms),
            "sahi_greedynmm": coco(dataset, last["sahi"]),
            "sahi_fast_greedynmm": coco(dataset, last["sahi_fast"]),
        },
        "load_avg_at_end": [round(v, 2) for v in os.getloadavg()],
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    args.md.write_text(markdown(result))
    print(json.dumps({k: result[k] for k in ("timing", "ratios", "map")}, indent=2))
    return result


# --------------------------------------------------------------------------------------- markdown
def _fmt(v) -> str:
    return "n/a" if v is None else f"{v:.3f}"


def markdown(r: dict) -> str:
    t, ratios, m = r["timing"], r["ratios"], r["map"]
    sahi = f"SAHI {r['sahi']} `get_sliced_prediction` (GREEDYNMM)"
    rows = [
        ("lanner `predict_tiled` (NMM)", t["lanner"], m["lanner_nmm"]),
        (f"{sahi}, model as trained", t["sahi"], m["sahi_greedynmm"]),
        (f"{sahi}, lanner's inference copy", t["sahi_fast"], m["sahi_fast_greedynmm"]),
        ("bare model loop (no merge), lanner's inference copy", t["bare"], None),
    ]
    where = (
        f"GPU {r['machine']['gpu']}"
        if r["device"].startswith("cuda")
        else f"CPU only ({r['machine']['cores']} cores, {r['machine']['torch_threads']} torch threads)"
    )
    lines = [
        "## Tiled prediction: lanner vs SAHI vs a bare model loop",
        "",
        f"{r['images']} images ({r['megapixels']:.1f} MP in all, {r['tiles_first_image']} tiles each), "
        f"tile {r['tile']} px, overlap {r['overlap']:g} ({r['overlap_px']} px), model {r['model']['model']} "
        f"at {r['model']['image_size']} px, scores >= {r['score_threshold']:g} kept, merge {r['merge']}. "
        f"{where}, lanner's inference precision {r['precision']}. "
        f"Best of {r['repeats']} interleaved repeats.",
        "",
        "| pipeline | seconds (best) | MP/s | mAP@.5 | mAP@[.5:.95] |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, tim, ap in rows:
        a50, a = (ap["map50"], ap["map50_95"]) if ap else (None, None)
        speed = f"{tim['seconds_best']:.2f} | {tim['megapixels_per_s']:.2f}"
        lines.append(f"| {name} | {speed} | {_fmt(a50)} | {_fmt(a)} |")
    nms = t["lanner_nms_once"]
    lines += [
        f"| lanner `predict_tiled` (NMS, one run) | {nms['seconds']:.2f} | {nms['megapixels_per_s']:.2f} | "
        f"{_fmt(m['lanner_nms']['map50'])} | {_fmt(m['lanner_nms']['map50_95'])} |",
        "",
        f"- lanner / bare time: **{ratios['lanner_over_bare_time']:.2f}x** (target <= 1.15x); "
        f"against the bare loop's model calls alone: {ratios['lanner_over_bare_model_only_time']:.2f}x",
        f"- lanner / SAHI throughput: **{ratios['lanner_over_sahi_throughput']:.2f}x** (target >= 1.5x); "
        f"against SAHI handed lanner's inference copy of the model: "
        f"{ratios['lanner_over_sahi_fast_throughput']:.2f}x",
        f"- batch size: lanner and bare {r['batch_size_lanner_bare']} (`{r['batch_size_from']}`); SAHI "
        f"{r['sahi_batch_size']}, the fastest of {r['sahi_batch_sweep_s_first_image']} (s on one image)"
        + (
            ""
            if r["sahi_torchvision_batches_natively"]
            else "; its torchvision wrapper calls the model once per slice whatever the batch size"
        ),
        "- SAHI's call is wrapped in `torch.inference_mode()` (its torchvision wrapper runs the model "
        "with autograd on); its switch to NMS/IoU below score 0.1 is turned off (`force_postprocess_type`)",
        f"- checks: same windows as SAHI {r['sanity']['same_windows']}; one tile through SAHI's wrapper "
        f"vs the model: same labels {r['sanity']['one_tile_sahi_vs_model']['same_labels']}, max box "
        f"difference {r['sanity']['one_tile_sahi_vs_model']['max_box_diff_px']:.1e} px; the same with "
        f"the inference copy: same labels {r['sanity']['one_tile_sahi_vs_inference_copy']['same_labels']}",
        "",
        "```",
        r["command"],
        "```",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
