"""One trained classifier scored at several evaluation sizes and centre-crop fractions (paired: same weights).

    .venv/bin/python benchmarks/budget_vs_ultralytics.py --minutes 10 --peers --lanner '' --keep /tmp/keep10
    .venv/bin/python benchmarks/eval_preprocessing.py /tmp/keep10 --out benchmarks/results/....json

A model trained on random-resized crops often scores higher when evaluated a little larger than it
trained (Touvron et al., "Fixing the train-test resolution discrepancy", 2019): the crops show objects
larger than a centre crop does. This checks whether that holds for lanner's light crops, by rewriting
the preprocessing a checkpoint carries (input size, crop fraction) and predicting the kept split's test
images through lanner's own ``api.predict``.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

from budget_vs_ultralytics import kept_arguments, scores
from rich.console import Console

from lanner import api
from lanner.engine.checkpoint import load_checkpoint, save_checkpoint

# (input size, crop fraction); None keeps what the run trained with
VARIANTS = [(None, None), (None, 1.0), (None, 0.8), (72, None), (88, None), (96, None), (96, 1.0)]


def score_variant(ckpt: dict, size: int | None, crop: float | None, test: list[Path], work: Path) -> dict:
    changed = copy.deepcopy(ckpt)
    prep = changed["meta"]["preprocessing"]
    prep.update({k: v for k, v in (("image_size", size), ("crop_pct", crop)) if v is not None})
    prep.pop("cache_size", None)  # derived from the two above when read back
    path = save_checkpoint(work / f"eval-{size}-{crop}.ckpt", changed)
    rows = api.predict(path, [str(p) for p in test], work / "eval-variant.csv", Console(quiet=True), topk=1)
    return scores([p.parent.name for p in test], [r["label"] for r in rows])


def main() -> None:
    args, run = kept_arguments(__doc__.splitlines()[0])
    test = sorted((args.kept / "data" / "test").glob("*/*"))
    ckpt = load_checkpoint(run / "checkpoints" / "best.ckpt")
    trained = ckpt["meta"]["preprocessing"]
    results = {"run": run.name, "trained": {k: trained[k] for k in ("image_size", "crop_pct")}}
    results["variants"] = {}
    for size, crop in VARIANTS:
        key = f"size {size or trained['image_size']}, crop {crop or trained['crop_pct']}"
        results["variants"][key] = score_variant(ckpt, size, crop, test, args.kept)
        print(key, results["variants"][key], flush=True)
    if args.out:
        args.out.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
