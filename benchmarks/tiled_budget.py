"""Tiled detection in a wall-clock budget: does a short `--tile --time` run use its budget and learn?

    .venv/bin/python benchmarks/tiled_budget.py [--minutes 15] [--images 112] [--size 3000] [--tile 512]

The shape of issue 16's aerial set (112 training photos up to 4000 px, objects of ~27 px, tiles of
512, a 15-minute budget on 2 CPU cores), which is not in shared/: the built-in detection demo's
generator writes that many large canvases with 24-40 px handwritten digits on a textured background
(`lanner.demo_detect.write_digit_canvases`). lanner trains with its defaults plus `--tile --overlap
--time`, exactly as a user types it; the script records what the plan said, how much of the budget
went to training steps, to validation and to nothing, how many steps ran, and the tiled full-image
mAP on the val canvases. Results go to ``benchmarks/results/tiled_budget.json``.
"""

from __future__ import annotations

import argparse
import io
import json
import tempfile
import time
from pathlib import Path

import torch
from rich.console import Console

from lanner import api
from lanner.config import make_config
from lanner.demo_detect import write_digit_canvases
from lanner.engine.checkpoint import load_checkpoint
from lanner.engine.history import read_history

RESULTS = Path(__file__).resolve().parent / "results" / "tiled_budget.json"


def plan_lines(said: str) -> list[str]:
    keys = ("epoch =", "time budget", "too few", "validat", "steps", "tile")
    return [line.strip() for line in said.splitlines() if any(k in line for k in keys)][:12]


def budget_accounting(run: Path, budget_s: float) -> dict:
    """What --time counts (training steps, validation, what each epoch writes; not the set-up before
    the first step), from the run's last checkpoint, and the steps it bought."""
    state = load_checkpoint(run / "checkpoints" / "last.ckpt")["train_state"]
    return {
        "run_wall_s": round(state["wall_seconds"], 1),
        "run_budget_used": round(state["wall_seconds"] / budget_s, 3),
        "train_steps_s": round(state["train_seconds"], 1),
        "steps": state["step"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=15.0)
    parser.add_argument("--images", type=int, default=112, help="training canvases")
    parser.add_argument("--val-images", type=int, default=16)
    parser.add_argument("--size", type=int, default=3000, help="canvas side in pixels")
    parser.add_argument("--tile", type=int, default=512)
    parser.add_argument("--overlap", type=float, default=0.2)
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    torch.set_num_threads(min(torch.get_num_threads(), 2))
    work = args.workdir or Path(tempfile.mkdtemp(prefix="tiled-budget-"))
    data = write_digit_canvases(
        work / "canvases", n_train=args.images, n_val=args.val_images, size=args.size, objects=(40, 80)
    )
    buffer = io.StringIO()
    console = Console(file=buffer, width=200)
    config = make_config(
        {"data": str(data), "run": str(work / "run"), "task": "detect", "tile": args.tile,
         "overlap": args.overlap, "time": f"{args.minutes:g}m", "hflip": False}
    )  # fmt: skip
    start = time.perf_counter()
    run = api.train(config, console, evaluate_after=False)
    wall_s = time.perf_counter() - start
    rows = read_history(run / "history.csv")
    epoch_s = sum(float(r.get("epoch_time_s") or 0) for r in rows)
    tiled = api.evaluate(run, str(data), "val", console=console, report=False)
    said = buffer.getvalue()
    result = {
        "data": f"{args.images} train + {args.val_images} val canvases of {args.size} px, 40-80 digits",
        "minutes": args.minutes,
        "tile": args.tile,
        "overlap": args.overlap,
        "threads": torch.get_num_threads(),
        "train_wall_s": round(wall_s, 1),  # api.train whole: tiling and the tile cache included
        "budget_used": round(wall_s / (args.minutes * 60), 3),
        **budget_accounting(run, args.minutes * 60),
        "epochs_logged": len(rows),
        "epoch_time_s_sum": round(epoch_s, 1),
        "history": [{k: r[k] for k in r if r[k] != ""} for r in rows],
        "map50_tiled_val": tiled.get("map50"),
        "map_tiled_val": tiled.get("map"),
        "plan": plan_lines(said),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(said[-4000:])
    print(json.dumps({k: v for k, v in result.items() if k != "history"}, indent=1))


if __name__ == "__main__":
    main()
