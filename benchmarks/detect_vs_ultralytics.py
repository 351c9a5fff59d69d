"""lanner's default CPU detector vs Ultralytics YOLO11n and YOLO26n, from scratch, equal wall-clock budget.

    .venv/bin/pip install ultralytics   # once; the benchmark never downloads anything else
    .venv/bin/python benchmarks/detect_vs_ultralytics.py [--minutes 15] [--data DIR] [--out FILE.json]

Both train on the ``train`` split of rbc_roboflow_coco for ``--minutes`` each (lanner with
``--time``, Ultralytics with ``time=`` in hours), one after the other, on the same threads. Both are
then scored by the same code on the same images (``valid`` + ``test``): lanner's
:func:`~lanner.eval.detection.evaluate_detections` (COCOeval, tested equal to pycocotools), with
every prediction down to score 0.001 and at most 100 per image. YOLO11n is built from its yaml
(``YOLO("yolo11n.yaml")``, ``--peers``): random init, like lanner. Ultralytics would fetch Arial.ttf for its
plots; the config dir it reads is pointed at a temporary folder holding matplotlib's DejaVuSans
under that name, and plots are off.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

import torch
import yaml
from rich.console import Console

from lanner import api
from lanner.config import make_config
from lanner.data.detections import Detections
from lanner.data.formats import read_dataset, write_dataset
from lanner.data.records import Dataset
from lanner.eval.detection import evaluate_detections

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "rbc_roboflow_coco"
EVAL_SPLITS = ("val", "test")  # Roboflow's "valid" is read as val
MAX_DETECTIONS = 100
EVAL_CONF = 0.001


def eval_subset(dataset: Dataset) -> Dataset:
    records = [r for r in dataset.records if r.split in EVAL_SPLITS]
    return Dataset(dataset.classes, records, "detect", dataset.root, dataset.format)


def coco_scores(dataset: Dataset, predictions: list[Detections]) -> dict:
    m = evaluate_detections(dataset, predictions)
    return {"map50": m["map50"], "map50_95": m["map"], "images": m["num_images"]}


# ----------------------------------------------------------------------------------------- lanner
def run_lanner(
    data: Path, minutes: float, work: Path, evaluation: Dataset, model: str | None, image_size: int | None
) -> dict:
    from lanner.tasks.detect.evaluate import predict_dataset
    from lanner.tasks.loading import load_run

    config = make_config(
        {
            "data": str(data),
            "task": "detect",
            "run": str(work / "lanner"),
            "time": f"{minutes}m",
            "epochs": 1000,
            **({"model": model} if model else {}),
            **({"image_size": image_size} if image_size else {}),
        }
    )
    start = time.perf_counter()
    run = api.train(config, evaluate_after=False)
    train_s = time.perf_counter() - start
    loaded = load_run(run)
    kept, detections = predict_dataset(loaded, evaluation, Console())
    assert len(kept.records) == len(evaluation.records)
    return {
        "model": loaded.config.model,
        "image_size": loaded.meta.get("image_size"),
        "train_s": round(train_s, 1),
        "run": str(run),
        **coco_scores(evaluation, detections),
    }


# ------------------------------------------------------------------------------------ ultralytics
def offline_ultralytics(work: Path) -> None:
    """Point Ultralytics at a private settings dir with its font already there, and keep it offline."""
    import matplotlib

    config_dir = work / "ultralytics-config"
    config_dir.mkdir(parents=True, exist_ok=True)
    font = Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans.ttf"
    for name in ("Arial.ttf", "Arial.Unicode.ttf"):
        shutil.copy(font, config_dir / name)
    os.environ.update({"YOLO_CONFIG_DIR": str(config_dir), "YOLO_OFFLINE": "1", "ULTRALYTICS_OFFLINE": "1"})


def yolo_dataset(data: Path, work: Path) -> Path:
    """The same images and boxes in YOLO layout, written by lanner's YOLO writer."""
    out = work / "yolo-data"
    write_dataset(read_dataset(data), "yolo", out)
    # Ultralytics resolves a relative `path:` against its datasets dir, not the yaml's folder.
    data_yaml = out / "data.yaml"
    spec = yaml.safe_load(data_yaml.read_text())
    spec["path"] = str(out.resolve())
    if "val" not in spec and "test" in spec:  # Ultralytics requires val: (raccoon_voc has train/test only)
        spec["val"] = spec["test"]
    data_yaml.write_text(yaml.safe_dump(spec, sort_keys=False))
    return data_yaml


def run_ultralytics(
    data: Path, minutes: float, work: Path, evaluation: Dataset, imgsz: int, peer: str = "yolo11n.yaml"
) -> dict:
    offline_ultralytics(work)
    from ultralytics import YOLO

    data_yaml = yolo_dataset(data, work)
    name = Path(peer).stem
    model = YOLO(peer)
    start = time.perf_counter()
    # Decoded images cached in RAM and default dataloader workers: the same advantages lanner has.
    model.train(
        data=str(data_yaml),
        imgsz=imgsz,
        time=minutes / 60,
        epochs=1000,
        device="cpu",
        batch=16,
        cache="ram",
        pretrained=False,
        amp=False,
        plots=False,
        project=str(work / "ultralytics"),
        name=name,
        exist_ok=True,
        verbose=False,
        seed=0,
    )
    train_s = time.perf_counter() - start
    best = work / "ultralytics" / name / "weights" / "best.pt"
    trained = YOLO(str(best))
    detections = []
    for rec in evaluation.records:
        result = trained.predict(
            str(rec.path), imgsz=imgsz, conf=EVAL_CONF, max_det=MAX_DETECTIONS, device="cpu", verbose=False
        )[0]
        boxes = result.boxes
        detections.append(Detections(boxes.xyxy.numpy(), boxes.conf.numpy(), boxes.cls.numpy().astype(int)))
    return {
        "model": f"{peer} (random init)",
        "image_size": imgsz,
        "train_s": round(train_s, 1),
        **coco_scores(evaluation, detections),
    }


# ------------------------------------------------------------------------------------------- main
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--minutes", type=float, default=15.0, help="training budget for EACH detector")
    parser.add_argument("--imgsz", type=int, default=416, help="Ultralytics training/eval size")
    parser.add_argument("--model", default=None, help="lanner model (default: lanner's CPU default)")
    parser.add_argument(
        "--image-size", type=int, default=None, help="lanner image size (default: the model's)"
    )
    parser.add_argument("--only", choices=("lanner", "ultralytics"), default=None)
    parser.add_argument(
        "--peers", nargs="+", default=["yolo11n.yaml", "yolo26n.yaml"], help="Ultralytics yamls"
    )
    parser.add_argument("--workdir", type=Path, default=None, help="keep runs here (default: a temp dir)")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/detect_vs_ultralytics.json"))
    args = parser.parse_args()

    work = args.workdir or Path(tempfile.mkdtemp(prefix="lanner-vs-yolo-"))
    if (work / "lanner").exists():
        raise SystemExit(f"{work}/lanner exists: pass a fresh --workdir")
    evaluation = eval_subset(read_dataset(args.data))
    results = {
        "data": str(args.data),
        "eval_splits": list(EVAL_SPLITS),
        "minutes_each": args.minutes,
        "threads": torch.get_num_threads(),
        "eval_conf": EVAL_CONF,
        "max_detections": MAX_DETECTIONS,
    }
    if args.only in (None, "lanner"):
        results["lanner"] = run_lanner(args.data, args.minutes, work, evaluation, args.model, args.image_size)
        save(results, args.out)  # kept even if the second half fails
    if args.only in (None, "ultralytics"):
        for peer in args.peers:
            results[Path(peer).stem] = run_ultralytics(
                args.data, args.minutes, work, evaluation, args.imgsz, peer
            )
            save(results, args.out)
    for name in ("lanner", *(Path(p).stem for p in args.peers)):
        if name in results:
            r = results[name]
            print(
                f"{name:<12} {r['model']:<28} {r['image_size']:>4}px  train {r['train_s']:>6.0f}s  "
                f"mAP@.5 {r['map50']:.4f}  mAP@.5:.95 {r['map50_95']:.4f}  ({r['images']} images)"
            )
    print(f"results: {args.out}")


def save(results: dict, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
