"""A model's layer summary: each block's output shape, parameters (trainable and frozen) and compute.

Compute is counted by torch's own ``torch.utils.flop_counter.FlopCounterMode`` over one forward
pass of a single input. It counts a multiply-add as two FLOPs; papers and timm quote
multiply-adds (MACs) and call them FLOPs (ResNet-18 at 224 px: "1.8 GFLOPs"), so both are given.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

MAX_SHAPE_TEXT = 70


class _Counts:
    """Frozen parameters and multiply-adds, derived alike for a block and a whole model."""

    params: int
    trainable: int
    flops: int

    @property
    def frozen(self) -> int:
        return self.params - self.trainable

    @property
    def macs(self) -> int:
        return self.flops // 2


@dataclass
class BlockRow(_Counts):
    name: str
    kind: str  # the block's class name
    output: str  # e.g. "1x64x56x56"; containers of tensors are spelled out
    params: int
    trainable: int
    flops: int  # torch's count: two per multiply-add


@dataclass
class ModelSummary(_Counts):
    model: str
    input: str
    blocks: list[BlockRow]
    params: int
    trainable: int
    flops: int
    notes: list[str] = field(default_factory=list)


def describe_output(out: Any) -> str:
    """A tensor's shape as ``1x64x56x56``; lists, tuples and dicts of tensors item by item."""
    if isinstance(out, torch.Tensor):
        text = "x".join(str(d) for d in out.shape)
    elif isinstance(out, dict):
        text = "{" + ", ".join(f"{k}: {describe_output(v)}" for k, v in out.items()) + "}"
    elif isinstance(out, list | tuple):
        text = "[" + ", ".join(describe_output(v) for v in out) + "]"
    else:
        text = type(out).__name__
    return text if len(text) <= MAX_SHAPE_TEXT else text[: MAX_SHAPE_TEXT - 3] + "..."


def _blocks(model: nn.Module, depth: int) -> list[tuple[str, nn.Module]]:
    """The modules ``depth`` levels down, and leaves above that level, in registration order."""
    found = []
    for name, module in model.named_modules():
        level = name.count(".") + 1 if name else 0
        if level == depth or (0 < level < depth and not any(True for _ in module.children())):
            found.append((name, module))
    return found


def _count(params) -> tuple[int, int]:
    params = list(params)
    return sum(p.numel() for p in params), sum(p.numel() for p in params if p.requires_grad)


def _recorder(outputs: dict[str, str], key: str):
    """A forward hook writing the block's output shape (returning None: the output stays as it is)."""

    def record(module: nn.Module, inputs: Any, output: Any) -> None:
        outputs.setdefault(key, describe_output(output))

    return record


@torch.no_grad()
def summarise_model(model: nn.Module, sample: Any, name: str = "", depth: int = 1) -> ModelSummary:
    """One forward pass of ``sample`` through ``model`` (in eval mode), block by block."""
    model.eval()
    blocks = _blocks(model, depth)
    outputs: dict[str, str] = {}
    hooks = [module.register_forward_hook(_recorder(outputs, key)) for key, module in blocks]
    try:
        with FlopCounterMode(display=False) as counter:
            model(sample)
    finally:
        for hook in hooks:
            hook.remove()
    per_module = counter.get_flop_counts()
    root = type(model).__name__
    rows = [
        BlockRow(
            key,
            type(m).__name__,
            outputs.get(key, "(not called)"),
            *_count(m.parameters()),
            sum(per_module.get(f"{root}.{key}", {}).values()),
        )  # fmt: skip
        for key, m in blocks
    ]
    total, trainable = _count(model.parameters())
    return ModelSummary(
        name or root, describe_output(sample), rows, total, trainable, counter.get_total_flops()
    )
