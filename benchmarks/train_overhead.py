"""lanner's training throughput against a bare PyTorch loop over pre-decoded images (the compute limit).

    .venv/bin/python benchmarks/train_overhead.py [--data DIR] [--model resnet10t] [--image-size 128] \
        [--precision 32|bf16] [--device cpu|cuda]

lanner reads real JPEG files from disk with its default augmentation (random resized crop, colour
jitter, flip); the bare loop trains the same model, batch size and resolution on the same images
already decoded and resized into one in-memory tensor, with no augmentation. Both use the same
optimizer, thread count, memory format (channels-last, as lanner trains), precision (autocast
for bf16) and device (``--device cuda``: the same GPU, the bare loop's tensor held on it), in one
process, bare loop before and after lanner (drift shows).
lanner's first epoch includes building its image cache; that is reported separately.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from lanner import api
from lanner.config import make_config
from lanner.data.cache import preprocess
from lanner.data.formats import read_dataset
from lanner.engine.history import read_history
from lanner.models.classifiers import build_classifier

DEFAULT_DATA = (
    Path(__file__).resolve().parents[2] / "shared" / "data" / "sign_language_digits_cls" / "Dataset"
)


def bare_loop_images_per_s(
    x: torch.Tensor, y: torch.Tensor, model_name: str, batch: int, epochs: int, precision: str = "32",
    device: str = "cpu",
) -> list[float]:  # fmt: skip
    """Images/s per epoch of the plainest correct training loop over an in-memory tensor (on ``device``)."""
    dev = torch.device(device)
    model, _, _ = build_classifier(model_name, int(y.max()) + 1)
    model = model.to(dev, memory_format=torch.channels_last)
    x = x.to(dev).contiguous(memory_format=torch.channels_last)
    y = y.to(dev)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    loss_fn = torch.nn.CrossEntropyLoss()
    model.train()
    speeds = []
    for epoch in range(epochs):
        order = torch.randperm(len(x), generator=torch.Generator().manual_seed(epoch)).to(dev)
        _synchronize(dev)
        start = time.perf_counter()
        for i in range(0, len(x), batch):
            idx = order[i : i + batch]
            if len(idx) < 2:
                continue
            opt.zero_grad(set_to_none=True)
            with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
                loss = loss_fn(model(x[idx]), y[idx])
            loss.backward()
            opt.step()
        _synchronize(dev)
        speeds.append(len(x) / (time.perf_counter() - start))
    return speeds


def _synchronize(device: torch.device) -> None:
    """Wait for the GPU's queued work (a timer around asynchronous CUDA calls measures nothing else)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def decoded_tensor(
    paths: list[Path], labels: list[int], size: int, mean, std
) -> tuple[torch.Tensor, torch.Tensor]:
    arr = np.stack([preprocess(p, size) for p in paths])  # [N, S, S, 3] uint8
    x = torch.from_numpy(arr).permute(0, 3, 1, 2).float().div(255)
    x = (x - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    return x.contiguous(), torch.tensor(labels)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--model", default="resnet10t")
    ap.add_argument("--precision", default="32", choices=("32", "bf16"))
    ap.add_argument("--image-size", type=int, default=128)
    ap.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N: lanner and the bare loop both")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument(
        "--epochs", type=int, default=3, help="lanner epochs (the first includes the cache build)"
    )
    ap.add_argument("--out", type=Path, default=None, help="write the figures as JSON here")
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="lanner-bench-"))
    cfg = make_config(
        {
            "data": str(args.data),
            "run": str(work / "run"),
            "model": args.model,
            "image_size": args.image_size,
            "batch_size": args.batch_size,
            "epochs": args.epochs,
            "cache_dir": str(work / "cache"),
            "val_fraction": 0.2,
            "schedule": "constant",
            "precision": args.precision,
            "device": args.device,
        }
    )
    ds = read_dataset(args.data)
    model, mean, std = build_classifier(args.model, len(ds.classes))
    del model
    # The bare loop gets the same number of images per epoch as lanner's training split.
    n_train = round(len(ds.records) * 0.8)
    recs = ds.records[:: max(1, len(ds.records) // n_train)][:n_train]
    t0 = time.perf_counter()
    x, y = decoded_tensor([r.path for r in recs], [r.label for r in recs], args.image_size, mean, std)
    decode_s = time.perf_counter() - t0

    bare_before = bare_loop_images_per_s(x, y, args.model, args.batch_size, 2, args.precision, args.device)
    t0 = time.perf_counter()
    run = api.train(cfg, evaluate_after=False)
    lanner_total_s = time.perf_counter() - t0
    bare_after = bare_loop_images_per_s(x, y, args.model, args.batch_size, 1, args.precision, args.device)

    history = read_history(run / "history.csv")
    lanner_speed = [float(h["images_per_s"]) for h in history]
    epoch_times = [float(h["epoch_time_s"]) for h in history]
    bare = float(np.mean(bare_before[1:] + bare_after))  # bare epoch 1 is warm-up
    steady = float(np.mean(lanner_speed[1:]))
    setup_s = lanner_total_s - sum(epoch_times)
    result = {
        "data": str(args.data),
        "model": args.model,
        "image_size": args.image_size,
        "batch_size": args.batch_size,
        "precision": args.precision,
        "device": torch.cuda.get_device_name(args.device) if args.device.startswith("cuda") else "cpu",
        "threads": torch.get_num_threads(),
        "train_images": int(history and n_train),
        "bare_images_per_s": {
            "before": [round(s, 1) for s in bare_before],
            "after": [round(s, 1) for s in bare_after],
        },
        "lanner_images_per_s_per_epoch": lanner_speed,
        "ratio_from_epoch_2": round(steady / bare, 3),
        "lanner_setup_and_cache_build_s": round(setup_s, 1),
        "lanner_wall_s_incl_validation_checkpoints_plots": round(lanner_total_s, 1),
        "bare_decode_into_memory_s": round(decode_s, 1),
    }
    print(json.dumps(result, indent=2))
    print(
        f"\nlanner / bare loop throughput from epoch 2: {result['ratio_from_epoch_2']:.3f} (target >= 0.95)"
    )
    if args.out:
        args.out.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
