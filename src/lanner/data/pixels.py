"""From cached uint8 pixels to the float tensors a model sees, and the preprocessing a run records.

Shared by every task: classification crops and normalises, detection converts letterboxed canvases;
both start from :func:`to_float`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

CROP_PCT = 0.875  # the cache holds images at image_size / CROP_PCT; evaluation takes the centre crop


@dataclass(frozen=True)
class Preprocessing:
    """What a checkpoint must carry so prediction sees exactly what training saw."""

    image_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    crop_pct: float = CROP_PCT  # pretrained weights say theirs (timm's pretrained cfg)
    interpolation: str = "bilinear"  # recorded for exporters; the cache resizes bilinearly

    @property
    def cache_size(self) -> int:
        return int(math.floor(self.image_size / self.crop_pct))

    def to_dict(self) -> dict:
        return {
            "image_size": self.image_size,
            "cache_size": self.cache_size,
            "mean": list(self.mean),
            "std": list(self.std),
            "crop_pct": self.crop_pct,
            "interpolation": self.interpolation,
        }

    @classmethod
    def from_dict(cls, d: dict) -> Preprocessing:
        extra = {k: d[k] for k in ("crop_pct", "interpolation") if k in d}
        return cls(int(d["image_size"]), tuple(d["mean"]), tuple(d["std"]), **extra)


def to_float(images_u8: np.ndarray | torch.Tensor, device: torch.device | str = "cpu") -> torch.Tensor:
    """[B, H, W, 3] uint8 -> [B, 3, H, W] float in 0..1 on ``device``.

    The uint8 batch travels (4x fewer bytes than floats) and converts there, so on a GPU the
    conversion and the augmentation after it run on the GPU, not on the training process's CPU.
    """
    t = torch.as_tensor(np.ascontiguousarray(images_u8)) if isinstance(images_u8, np.ndarray) else images_u8
    return t.to(device, non_blocking=True).permute(0, 3, 1, 2).float().div_(255.0)


def centre_crop(x: torch.Tensor, size: int) -> torch.Tensor:
    h, w = x.shape[-2:]
    top, left = (h - size) // 2, (w - size) // 2
    return x[..., top : top + size, left : left + size]


def normalise(x: torch.Tensor, prep: Preprocessing) -> torch.Tensor:
    mean = torch.tensor(prep.mean, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(prep.std, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    return (x - mean) / std


def eval_batch(images_u8, prep: Preprocessing, device: torch.device | str = "cpu") -> torch.Tensor:
    """Cached squares [B, S', S', 3] uint8 -> normalised centre crops [B, 3, S, S] on ``device``."""
    return normalise(centre_crop(to_float(images_u8, device), prep.image_size), prep)


def batch_generator(seed: int, epoch: int, index: int) -> torch.Generator:
    """A generator per (epoch, batch): resuming mid-epoch reproduces the same augmentations."""
    return torch.Generator().manual_seed(hash((seed, epoch, index)) & 0x7FFFFFFF)
