"""Where and at which precision a model runs: the device and autocast choices of train, eval and predict."""

from __future__ import annotations

import contextlib

import torch

from lanner.errors import ConfigError


def choose_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {name!r} asked for, but CUDA is not available on this machine")
    return device


def choose_precision(precision: str, device: torch.device) -> str:
    if precision != "auto":
        return precision
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "16-mixed"
    return "32"  # CPU autocast is slower than fp32 for most convolution kernels


def autocast_for(device: torch.device, precision: str):
    """The autocast context of a precision setting (a no-op context for 32)."""
    if precision in ("bf16", "16-mixed"):
        dtype = torch.bfloat16 if precision == "bf16" else torch.float16
        return torch.autocast(device.type, dtype=dtype)
    return contextlib.nullcontext()
