"""Small real datasets written to disk for tests (scikit-learn's handwritten digits as images)."""

from __future__ import annotations

import os
import socket
import subprocess
from pathlib import Path

import numpy as np
from PIL import Image


def digit_images(label: int, count: int, size: int = 24) -> list[Image.Image]:
    from sklearn.datasets import load_digits

    digits = load_digits()
    idx = np.flatnonzero(digits.target == label)[:count]
    return [
        Image.fromarray((digits.images[i] * 15.9).astype(np.uint8), mode="L").resize((size, size))
        for i in idx
    ]


def write_digit_folders(
    root: Path, labels=(0, 1, 7), per_class: int = 16, splits: tuple[str, ...] = ()
) -> Path:
    """``root/[split/]<digit>/<n>.png`` with real digits; class folders named after the digit."""
    for label in labels:
        images = digit_images(label, per_class * max(1, len(splits)))
        for n, img in enumerate(images):
            split = splits[n % len(splits)] if splits else ""
            folder = root / split / f"digit{label}"
            folder.mkdir(parents=True, exist_ok=True)
            img.save(folder / f"{n:03d}.png")
    return root


def save_untrained_detector(
    run: Path, meta: dict, model_name: str = "fcos_test_resnet", config: dict | None = None
) -> Path:
    """A run directory holding an untrained detector checkpoint, as training would save it; ``config``:
    settings of the run's config.yaml (what a review's folds train with)."""
    import torch

    from lanner.config import make_config
    from lanner.engine.checkpoint import save_checkpoint
    from lanner.rundir import CheckpointMeta
    from lanner.tasks.detect.setup import build_detector_from_meta

    torch.manual_seed(0)
    model = build_detector_from_meta(CheckpointMeta.from_checkpoint({"meta": meta, "model_name": model_name}))
    config = make_config(
        {"data": "unused", "task": "detect", "model": model_name, "score_threshold": 0.0, **(config or {})}
    )
    save_checkpoint(
        run / "checkpoints" / "best.ckpt",
        {
            "config": config.model_dump(mode="json"),
            "model_name": model_name,
            "meta": meta,
            "state_dict": model.state_dict(),
        },
    )
    return run


def save_untrained_classifier(
    run: Path, classes: list[str], image_size: int = 32, data: str = "unused"
) -> Path:
    """A run directory holding an untrained classifier checkpoint (BatchNorm statistics randomised);
    ``data``: the dataset its config names (what eval reads without DATA)."""
    import torch

    from lanner.config import make_config
    from lanner.data.pixels import Preprocessing
    from lanner.engine.checkpoint import save_checkpoint
    from lanner.models.classifiers import build_classifier

    torch.manual_seed(0)
    model, mean, std = build_classifier("test_resnet", len(classes))
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 1.5)
    meta = {
        "task": "classify",
        "classes": classes,
        "preprocessing": Preprocessing(image_size, mean, std).to_dict(),
    }
    config = make_config({"data": data, "model": "test_resnet", "image_size": image_size})
    save_checkpoint(
        run / "checkpoints" / "best.ckpt",
        {
            "config": config.model_dump(mode="json"),
            "model_name": "test_resnet",
            "meta": meta,
            "state_dict": model.state_dict(),
        },
    )
    return run


def write_tiny_class_folders(root: Path, per_class: int = 12) -> Path:
    """Two classes of 16 px PNGs (dark vs bright squares), the same pixels on every call."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for c, name in enumerate(("dark", "bright")):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            pixels = rng.integers(0, 100, (16, 16, 3)) + 150 * c
            Image.fromarray(pixels.astype("uint8")).save(root / name / f"{i:02d}.png")
    return root


# ------------------------------------------------------------------------- several processes at once
GROUP_VARIABLES = ("WORLD_SIZE", "RANK", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def group_env(**extra: str) -> dict:
    """This environment without any process-group variables of its own (torchrun's, SLURM's)."""
    base = {k: v for k, v in os.environ.items() if k not in GROUP_VARIABLES and not k.startswith("SLURM_")}
    return {**base, "COLUMNS": "250", **extra}


def run_together(commands: list[list[str]], envs: list[dict], cwd) -> list[subprocess.CompletedProcess]:
    """Start the commands at once (the processes of one group, each with ``group_env(**env)``) and
    wait for all of them; any still running after a failure are killed."""
    procs = [
        subprocess.Popen(
            cmd, cwd=cwd, env=group_env(**env), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        for cmd, env in zip(commands, envs, strict=True)
    ]
    try:
        outs = [p.communicate(timeout=600) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    return [
        subprocess.CompletedProcess(p.args, p.returncode, o, e) for p, (o, e) in zip(procs, outs, strict=True)
    ]
