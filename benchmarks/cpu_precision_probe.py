"""Training-step speed on this CPU: fp32 vs bf16 autocast, NCHW vs channels-last (lanner trains fp32 on CPUs),
and with ``--compile`` fp32 channels-last under torch.compile (its compile time is reported apart).

    .venv/bin/python benchmarks/cpu_precision_probe.py [--models resnet10t@80 resnet10t@112] [--steps 10]
        [--compile]

For each model@size: a timm model with 6 classes, batch 32 of random pixels, AdamW, 2 torch threads;
3 warm-up steps, then ``--steps`` timed training steps (forward, backward, optimizer) under each
precision and memory format. Prints images/s; ``--out`` writes them as JSON. No lanner code runs:
this measures the kernels lanner's precision choice (``models/devices.py``) depends on.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import timm
import torch
import torch.nn.functional as F


def images_per_s(
    name: str, size: int, bf16: bool, channels_last: bool, steps: int, batch: int = 32, compiled: bool = False
) -> tuple[float, float]:
    """Steady images/s, and the seconds of the 3 warm-up steps (compilation, with ``compiled``)."""
    torch.manual_seed(0)
    model = timm.create_model(name, num_classes=6).train()
    x, y = torch.randn(batch, 3, size, size), torch.randint(0, 6, (batch,))
    if channels_last:
        model, x = (
            model.to(memory_format=torch.channels_last),
            x.contiguous(memory_format=torch.channels_last),
        )
    optimizer = torch.optim.AdamW(model.parameters(), 1e-3)
    forward = torch.compile(model) if compiled else model

    def step() -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = F.cross_entropy(forward(x).float(), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    start = time.perf_counter()
    for _ in range(3):
        step()
    warm_up_s = time.perf_counter() - start
    start = time.perf_counter()
    for _ in range(steps):
        step()
    return batch * steps / (time.perf_counter() - start), warm_up_s


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=["resnet10t@80", "resnet10t@112"])
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--compile", action="store_true", help="also fp32 channels-last under torch.compile")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    result, warm_up = {}, {}
    for spec in args.models:
        name, size = spec.split("@")
        variants = [(bf16, cl, False) for bf16 in (False, True) for cl in (False, True)]
        for bf16, channels_last, compiled in variants + ([(False, True, True)] if args.compile else []):
            key = f"{spec} {'bf16' if bf16 else 'fp32'} {'channels_last' if channels_last else 'nchw'}"
            key += " compiled" if compiled else ""
            speed, warm_up_s = images_per_s(
                name, int(size), bf16, channels_last, args.steps, compiled=compiled
            )
            result[key], warm_up[key] = round(speed, 1), round(warm_up_s, 1)
            print(f"{key}: {result[key]} images/s (3 warm-up steps: {warm_up[key]} s)", flush=True)
    if args.out:
        doc = {"threads": args.threads, "images_per_s": result, "warm_up_s": warm_up}
        args.out.write_text(json.dumps(doc, indent=1) + "\n")


if __name__ == "__main__":
    main()
