"""Re-probe the hardening of issue 10: hostile or mistaken input through the real `lanner` command.

Each probe runs one `lanner` process (a few run two) on files written here, and passes when the
exit code is the one promised (0 ok, 2 a clear error; never 1, a crash) and the output says what it
must (the file named, the reason). Prints one line per probe and a table of tried/passed counts per
category: path traversal, malformed values, error boundary and options, files and runs.

    PYTHONPATH=src python benchmarks/probes.py            # about 3-5 minutes on 2 CPU cores
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image, ImageDraw

TINY = ["--model", "test_resnet", "--image-size", "16", "--batch-size", "8", "--augment", "light"]
CATEGORIES = ("path traversal", "malformed values", "error boundary/options", "files and runs")


@dataclass
class Probe:
    category: str
    name: str
    args: list[str]
    code: int  # the exit code promised
    says: list[str] = field(default_factory=list)  # text the output must contain
    env: dict[str, str] = field(default_factory=dict)
    then: Callable[[Path], str | None] | None = None  # a check after the command: None, or what is wrong


def lanner(args: list[str], cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    full_env = {**os.environ, "LANNER_CACHE": str(cwd / "cache"), "COLUMNS": "400", **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "lanner", *args], cwd=cwd, capture_output=True, text=True, env=full_env
    )


# ------------------------------------------------------------------------------------------- data
def shape_image(path: Path, kind: int, n: int) -> None:
    im = Image.new("RGB", (32, 32), (10, 10, 10))
    draw, x = ImageDraw.Draw(im), 4 + n % 8
    (draw.ellipse if kind else draw.rectangle)([x, x, x + 16, x + 16], fill=(200, 60 * kind, 40))
    path.parent.mkdir(parents=True, exist_ok=True)
    im.save(path)


def class_folders(root: Path, classes: tuple[str, ...] = ("box", "disc"), per_class: int = 12) -> Path:
    for kind, name in enumerate(classes):
        for n in range(per_class):
            shape_image(root / name / f"{n}.png", kind % 2, n)
    return root


def coco(root: Path, names: list[str]) -> Path:
    """root/coco.json naming ``names`` as its images (one box each)."""
    root.mkdir(parents=True, exist_ok=True)
    images = [{"id": i + 1, "file_name": name, "width": 32, "height": 32} for i, name in enumerate(names)]
    boxes = [
        {"id": i + 1, "image_id": i + 1, "category_id": 1, "bbox": [4, 4, 16, 16], "area": 256}
        for i in range(len(names))
    ]
    data = {"images": images, "annotations": boxes, "categories": [{"id": 1, "name": "thing"}]}
    (root / "coco.json").write_text(json.dumps(data))
    return root / "coco.json"


def write_data(work: Path) -> None:
    class_folders(work / "two")
    class_folders(work / "one", classes=("box",))
    for n in range(4):
        shape_image(work / "outside" / f"{n}.png", 0, n)
    coco(work / "escape", ["../outside/0.png", "../../../../../../etc/hostname"])
    coco(work / "absolute", [str(work / "outside" / "1.png")])
    (work / "link").mkdir()
    (work / "link" / "in.png").symlink_to(work / "outside" / "2.png")
    coco(work / "link", ["in.png"])
    coco(work / "trusted", ["../outside/0.png", "../outside/1.png", "../outside/2.png", "../outside/3.png"])
    (work / "truncated").mkdir()
    (work / "truncated" / "coco.json").write_text('{"images": [{"id": 1, "file_na')
    (work / "a-file").write_text("not a folder")
    (work / "empty-run").mkdir()


FULL_DISK = """
    import errno, os, torch
    _save, _calls = torch.save, {"n": 0}

    def save(obj, f, *args, **kwargs):
        if ".last.ckpt." in os.fspath(f):
            _calls["n"] += 1
            if _calls["n"] == 2:
                raise OSError(errno.ENOSPC, "No space left on device", os.fspath(f))
        return _save(obj, f, *args, **kwargs)

    torch.save = save
"""


def injection(work: Path) -> dict[str, str]:
    folder = work / "inject"
    folder.mkdir(exist_ok=True)
    (folder / "sitecustomize.py").write_text(textwrap.dedent(FULL_DISK))
    return {"PYTHONPATH": os.pathsep.join([str(folder), os.environ.get("PYTHONPATH", "")])}


def write_lock(run: Path, pid: int) -> None:
    run.mkdir(parents=True, exist_ok=True)
    owner = {"pid": pid, "host": os.uname().nodename, "started": "", "command": "probe"}
    (run / "run.lock").write_text(json.dumps(owner))


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


# ------------------------------------------------------------------------------------------ probes
def missing(path: str) -> Callable[[Path], str | None]:
    return lambda work: f"{path} was left behind" if (work / path).exists() else None


def no_temp_files(run: str) -> Callable[[Path], str | None]:
    def check(work: Path) -> str | None:
        left = list((work / run).rglob(".*.tmp"))
        resumed = lanner(["resume", run, "--no-eval"], work)
        if left:
            return f"temp files left: {left}"
        return None if resumed.returncode == 0 else f"resume failed: {resumed.stdout[-300:]}"

    return check


def traversal_probes() -> list[Probe]:
    c = "path traversal"
    return [
        Probe(
            c,
            "coco ../ and /etc names: check lists them",
            ["check", "escape/coco.json"],
            0,
            ["resolves outside the dataset root", "problems: 2"],
        ),
        Probe(c, "same, --strict: an error", ["check", "escape/coco.json", "--strict"], 2, ["outside"]),
        Probe(
            c, "absolute path in coco, --strict", ["check", "absolute/coco.json", "--strict"], 2, ["outside"]
        ),
        Probe(
            c, "symlink out of the dataset, --strict", ["check", "link/coco.json", "--strict"], 2, ["outside"]
        ),
        Probe(
            c,
            "train on escaping coco: refused, file named",
            ["train", "trusted/coco.json", "--run", "t-refused", "--epochs", "1"],
            2,
            ["trusted/coco.json", "--allow-outside-root"],
            then=missing("t-refused"),
        ),
        Probe(
            c,
            "check --allow-outside-root trusts it",
            ["check", "trusted/coco.json", "--allow-outside-root"],
            0,
            ["problems: 0"],
        ),
        Probe(
            c, "convert onto its own source", ["convert", "two", "two", "--to", "folder"], 2, ["onto itself"]
        ),
    ]


def value_probes() -> list[Probe]:
    c, train = "malformed values", ["train", "two", "--run", "never"]
    return [
        Probe(c, "--epochs 0", [*train, "--epochs", "0"], 2, ["epochs (--epochs): 0 is out of range"]),
        Probe(c, "--lr -1", [*train, "--lr", "-1"], 2, ["out of range"]),
        Probe(c, "--val-fraction 1.5", [*train, "--val-fraction", "1.5"], 2, ["val_fraction"]),
        Probe(
            c, "--batch-size abc", [*train, "--batch-size", "abc"], 2, ["Invalid value for '--batch-size'"]
        ),
        Probe(c, "--time 0s", [*train, "--time", "0s"], 2, ["no time at all"]),
        Probe(c, "--set with a misspelt key", [*train, "--set", "schedule.gama=0.5"], 2, ["did you mean"]),
        Probe(c, "--max-image-pixels -1", ["check", "two", "--max-image-pixels", "-1"], 2, ["out of range"]),
        Probe(c, "truncated coco.json", ["check", "truncated/coco.json"], 2, ["truncated/coco.json"]),
    ]


def boundary_probes() -> list[Probe]:
    c = "error boundary/options"
    return [
        Probe(c, "unknown command", ["trian", "two"], 2, ["No such command"]),
        Probe(c, "unknown option", ["train", "two", "--epoch", "3"], 2, ["--epoch"]),
        Probe(c, "eval of no run", ["eval", "no-such-run"], 2, ["no-such-run"]),
        Probe(c, "predict a missing file", ["predict", "no-such-run", "nothing.png"], 2, ["no-such-run"]),
        Probe(c, "resume a folder without checkpoints", ["resume", "empty-run"], 2, ["no checkpoints"]),
        Probe(c, "--help", ["train", "--help"], 0, ["--allow-outside-root"]),
    ]


def run_probes(work: Path) -> list[Probe]:
    c, train = "files and runs", ["train", "two", "--epochs", "1", *TINY, "--no-eval"]
    return [
        Probe(
            c,
            "one-class classification",
            ["train", "one", "--run", "r-one", *TINY],
            2,
            ["a classifier needs at least 2"],
            then=missing("r-one"),
        ),
        Probe(c, "first run", [*train, "--run", "r1"], 0, ["run directory"]),
        Probe(c, "same --run again", [*train, "--run", "r1"], 2, ["already holds a run"]),
        Probe(
            c,
            "run held by a live process",
            [*train, "--run", "r-held"],
            2,
            [f"in use by process {os.getpid()}"],
        ),
        Probe(c, "stale lock taken over", [*train, "--run", "r-stale"], 0, ["taking over"]),
        Probe(c, "--run is a file", [*train, "--run", "a-file"], 2, ["a-file: is a file"]),
        Probe(c, "--run inside a file", [*train, "--run", "a-file/run"], 2, ["a-file/run: cannot make"]),
        Probe(
            c,
            "disk full at the 2nd checkpoint; then resume",
            ["train", "two", "--epochs", "2", *TINY, "--no-eval", "--run", "r-full"],
            2,
            ["r-full/checkpoints/last.ckpt: no space left"],
            env=injection(work),
            then=no_temp_files("r-full"),
        ),
    ]


def run_one(probe: Probe, work: Path) -> tuple[bool, str]:
    result = lanner(probe.args, work, probe.env)
    output = " ".join((result.stdout + result.stderr).split())
    if result.returncode != probe.code:
        return False, f"exit {result.returncode}, expected {probe.code}: {output[-300:]}"
    absent = [text for text in probe.says if text not in output]
    if absent:
        return False, f"output lacks {absent}: {output[-300:]}"
    problem = probe.then(work) if probe.then else None
    return problem is None, problem or ""


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--only", help="run only the probes of this category")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        write_data(work)
        write_lock(work / "r-held", os.getpid())
        write_lock(work / "r-stale", dead_pid())
        probes = traversal_probes() + value_probes() + boundary_probes() + run_probes(work)
        results = [(p, *run_one(p, work)) for p in probes if args.only in (None, p.category)]
    for probe, ok, why in results:
        print(
            f"{'PASS' if ok else 'FAIL'}  {probe.category:24} {probe.name}" + (f"  -- {why}" if why else "")
        )
    print_table(results)
    return 0 if all(ok for _, ok, _ in results) else 1


def print_table(results: list) -> None:
    print(f"\n| {'category':24} | tried | passed |\n|{'-' * 26}|------:|-------:|")
    for category in CATEGORIES:
        mine = [ok for p, ok, _ in results if p.category == category]
        print(f"| {category:24} | {len(mine):5} | {sum(mine):6} |")
    print(f"| {'all':24} | {len(results):5} | {sum(ok for _, ok, _ in results):6} |")


if __name__ == "__main__":
    started = time.perf_counter()
    code = main()
    print(f"\n{time.perf_counter() - started:.0f}s")
    sys.exit(code)
