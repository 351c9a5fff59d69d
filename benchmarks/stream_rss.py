"""Peak memory and speed of one training epoch: the decoded-image cache vs streaming from shards.

    nice -n 19 .venv/bin/python benchmarks/stream_rss.py [--sizes 1000,10000,50000] [--image-size 64] \
        [--model shallownet] [--work /tmp/stream_rss] [--out benchmarks/results/stream_rss.json]

For each N, N generated 64 px JPEGs (4 classes told apart by colour, under random noise patterns;
train/ and a fixed 200-image val/ split, so validation does not grow with N) are trained on for one
epoch (a small model, shallownet by default, so that the data side shows; batch 64, CPU,
default workers) twice, each in its own process:

* cache: ``lanner train DATA``: every image decoded into the uint8 memmap cache first (a fresh
  cache directory), then batches cut from it;
* stream: ``lanner shard DATA SHARDS`` (timed apart), then ``lanner train SHARDS``: batches
  streamed from the tar shards by the loader workers.

Peak RSS is sampled with psutil every 0.1 s: of the training process alone and of its whole process
tree (cache decoders or loader workers included; pages shared after fork count in each process,
so the tree figure overstates). The memmap's pages are file-backed: they count in RSS once touched,
which is what an epoch does. images/s is the epoch's own figure from history.csv (training steps
only); wall is the whole command (cache building included; sharding reported separately).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import psutil
from PIL import Image

COLOURS = [(200, 40, 40), (40, 170, 40), (40, 60, 210), (210, 190, 40)]
VAL_IMAGES = 200


def generate(root: Path, n_train: int, seed: int = 0) -> Path:
    """``root/{train,val}/<class>/<i>.jpg``: 64 px noise patterns tinted by the class colour."""
    if (root / "done").exists():
        return root
    rng = np.random.default_rng(seed)
    for split, count in (("train", n_train), ("val", VAL_IMAGES)):
        for i in range(count):
            c = i % len(COLOURS)
            folder = root / split / f"class{c}"
            folder.mkdir(parents=True, exist_ok=True)
            noise = rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)
            img = Image.fromarray(noise).resize((64, 64), Image.Resampling.NEAREST)
            tint = Image.new("RGB", (64, 64), COLOURS[c])
            Image.blend(img, tint, 0.55).save(folder / f"{i:06d}.jpg", quality=90)
    (root / "done").write_text("ok")
    return root


def run_measured(command: list[str], env: dict) -> dict:
    """Run ``command``; its wall time and peak RSS (process, and process tree) in MiB."""
    start = time.perf_counter()
    proc = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    me, peak, peak_tree = psutil.Process(proc.pid), 0, 0
    while proc.poll() is None:
        try:
            rss = me.memory_info().rss
            tree = rss + sum(c.memory_info().rss for c in me.children(recursive=True))
            peak, peak_tree = max(peak, rss), max(peak_tree, tree)
        except psutil.Error:
            pass  # a child ended between listing and reading it
        time.sleep(0.1)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{proc.stderr.read().decode()[-3000:]}")
    mib = 1024 * 1024
    return {"wall_s": round(time.perf_counter() - start, 1), "peak_rss_mib": round(peak / mib, 1),
            "peak_tree_rss_mib": round(peak_tree / mib, 1)}  # fmt: skip


def epoch_speed(run: Path) -> float:
    with (run / "history.csv").open(newline="") as f:
        return float(list(csv.DictReader(f))[0]["images_per_s"])


def train_command(data: Path, run: Path, image_size: int, model: str) -> list[str]:
    return [sys.executable, "-m", "lanner", "train", str(data), "--model", model, "--epochs", "1",
            "--batch-size", "64", "--image-size", str(image_size), "--device", "cpu", "--no-eval",
            "--run", str(run)]  # fmt: skip


def measure(n: int, work: Path, image_size: int, model: str) -> dict:
    data = generate(work / f"data-{n}", n)
    stamp = time.time_ns()  # fresh runs, cache and shards for every measurement
    env = {**os.environ, "LANNER_CACHE": str(work / f"cache-{n}-{stamp}")}
    cache_run, stream_run, shards = (
        work / f"{kind}-{n}-{stamp}" for kind in ("run-cache", "run-stream", "shards")
    )
    cache = run_measured(train_command(data, cache_run, image_size, model), env)
    sharding = run_measured(
        [sys.executable, "-m", "lanner", "shard", str(data), str(shards), "--image-size", str(image_size)],
        env,
    )
    stream = run_measured(train_command(shards, stream_run, image_size, model), env)
    cache["images_per_s"], stream["images_per_s"] = epoch_speed(cache_run), epoch_speed(stream_run)
    return {"train_images": n, "val_images": VAL_IMAGES, "cache": cache, "shard": sharding, "stream": stream}


def markdown_table(runs: list[dict]) -> str:
    """The docs/benchmarks.md table of ``runs``."""
    lines = [
        "| train images | model, px | cache: img/s | cache: peak RSS MiB (tree) | cache: wall s "
        "| shard: wall s | stream: img/s | stream: peak RSS MiB (tree) | stream: wall s |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in sorted(runs, key=lambda r: (r["image_size"], r["train_images"])):
        c, sh, st = r["cache"], r["shard"], r["stream"]
        cells = [f"{r['train_images']:,}", f"{r.get('model', 'resnet10t')}, {r['image_size']}",
                 f"{c['images_per_s']:.1f}",
                 f"{c['peak_rss_mib']:.0f} ({c['peak_tree_rss_mib']:.0f})", f"{c['wall_s']:.0f}",
                 f"{sh['wall_s']:.0f}", f"{st['images_per_s']:.1f}",
                 f"{st['peak_rss_mib']:.0f} ({st['peak_tree_rss_mib']:.0f})",
                 f"{st['wall_s']:.0f}"]  # fmt: skip
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="1000,10000,50000")
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--model", default="shallownet")
    parser.add_argument("--work", type=Path, default=Path("/tmp/stream_rss"))
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "stream_rss.json")
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    results = json.loads(args.out.read_text()) if args.out.exists() else {"runs": []}
    for n in (int(s) for s in args.sizes.split(",")):
        row = {**measure(n, args.work, args.image_size, args.model), "image_size": args.image_size,
               "model": args.model,
               "measured": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}  # fmt: skip
        print(json.dumps(row), flush=True)
        key = (n, args.image_size, args.model)
        kept = [r for r in results["runs"] if (r["train_images"], r["image_size"], r.get("model")) != key]
        results["runs"] = [*kept, row]
        results["command"] = " ".join(["nice -n 19 .venv/bin/python benchmarks/stream_rss.py", *sys.argv[1:]])
        args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(markdown_table(results["runs"]))


if __name__ == "__main__":
    main()
