"""Fuzz the dataset readers: N broken datasets per format, count crashes and files read per second.

Each case writes a small valid dataset (tests/malformed.py: 3 real images, one box each), breaks
1-3 things in its annotation files (values swapped for text, NaN, inf, None, lists, huge numbers,
paths leaving the dataset; keys and elements dropped; bytes that are not UTF-8; truncation), then
reads it with ``read_dataset``. A crash is any exception other than ``DataError``: the target is 0.

    PYTHONPATH=src python benchmarks/fuzz_readers.py --n 300
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from malformed import FORMATS, annotation_files, mutate, write_base  # noqa: E402

from lanner.data.formats import read_dataset  # noqa: E402
from lanner.errors import DataError  # noqa: E402


def fuzz_one(fmt: str, rng: random.Random) -> tuple[str, float, int, str | None]:
    """(outcome, seconds reading, annotation files read, crash traceback) of one broken dataset."""
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        source = write_base(fmt, root)
        mutate(fmt, root, rng, count=rng.randint(1, 3))
        files = len(annotation_files(fmt, root))
        start = time.perf_counter()
        try:
            read_dataset(source, fmt)
            outcome, crash = "read", None
        except DataError:
            outcome, crash = "data_error", None
        except Exception:  # noqa: BLE001 - counting these is the point
            outcome, crash = "crash", traceback.format_exc(limit=3)
        return outcome, time.perf_counter() - start, files, crash


def fuzz_format(fmt: str, n: int, seed: int) -> dict:
    rng = random.Random(f"{seed}-{fmt}")
    counts = {"read": 0, "data_error": 0, "crash": 0}
    seconds = files = 0.0
    crashes = []
    for _ in range(n):
        outcome, took, read, crash = fuzz_one(fmt, rng)
        counts[outcome] += 1
        seconds += took
        files += read
        if crash and len(crashes) < 5:
            crashes.append(crash)
    return {
        "format": fmt,
        "cases": n,
        **counts,
        "files_per_s": round(files / seconds, 1) if seconds else None,
        "crash_examples": crashes,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=300, help="broken datasets per format")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "fuzz_readers.json")
    args = parser.parse_args()
    rows = [fuzz_format(fmt, args.n, args.seed) for fmt in FORMATS]
    print(f"{'format':<10} {'cases':>6} {'read':>6} {'DataError':>10} {'crashes':>8} {'files/s':>9}")
    for r in rows:
        print(
            f"{r['format']:<10} {r['cases']:>6} {r['read']:>6} {r['data_error']:>10} "
            f"{r['crash']:>8} {r['files_per_s']:>9}"
        )
    for r in rows:
        for crash in r["crash_examples"]:
            print(f"\n--- crash in {r['format']}:\n{crash}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"n": args.n, "seed": args.seed, "formats": rows}, indent=2) + "\n")
    print(f"\nwritten: {args.out}")


if __name__ == "__main__":
    main()
