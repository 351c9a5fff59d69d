"""Which weights train: ``--freeze`` parsed and applied, the backbone's parameters (``--backbone-lr``).

Parts of a model, by the names torchvision and timm give them:

- ``backbone``: a classifier's everything but its head (timm's ``get_classifier()``); a detector's
  feature extractor (``backbone.body``; SSD: ``backbone.features``)
- ``fpn``: a detector's neck (``backbone.fpn``; SSD: ``backbone.extra``)
- ``rpn``: Faster R-CNN's region proposal network
- ``stages:K``: the backbone's stem and its first K stages (timm's ``feature_info``; ResNet layers)

``--freeze backbone`` freezes for the whole run, ``backbone:N`` for the first N epochs (the trainer
records the unfreeze as a new segment of the run); ``lanner resume RUN --unfreeze`` drops it;
``backbone,fpn,rpn`` leaves only Faster R-CNN's ROI heads training. Normalisation layers whose
weights are all frozen stay in eval mode, so their running statistics do not move either.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from lanner.errors import ConfigError

PARTS = ("backbone", "fpn", "rpn", "stages")
_PATHS = {
    "backbone": ("backbone.body", "backbone.features", "backbone"),
    "fpn": ("backbone.fpn", "backbone.extra"),
    "rpn": ("rpn",),
}
NORMS = (nn.modules.batchnorm._BatchNorm, nn.GroupNorm, nn.LayerNorm)


@dataclass(frozen=True)
class FreezePlan:
    """What ``--freeze`` freezes, and for how many first epochs (None: the whole run)."""

    parts: tuple[str, ...]
    stages: int | None = None
    epochs: int | None = None
    text: str = "backbone"  # as given (``backbone:2``), for the segment that records the unfreeze

    def active(self, epoch: int) -> bool:
        return self.epochs is None or epoch < self.epochs

    def describe(self) -> str:
        parts = [p if p != "stages" else f"stem + {self.stages} stages" for p in self.parts]
        span = "the whole run" if self.epochs is None else f"the first {self.epochs} epochs"
        return f"frozen: {', '.join(parts)} for {span}"


def parse_freeze(text: str | None, freeze_epochs: int = 0) -> FreezePlan | None:
    """``backbone``, ``backbone:N``, ``stages:K``, ``--freeze-epochs N``: ``backbone:N``."""
    if not text:
        plan = FreezePlan(("backbone",), epochs=freeze_epochs, text=f"backbone:{freeze_epochs}")
        return plan if freeze_epochs else None
    parts, stages, epochs = [], None, None
    for item in (i.strip() for i in text.split(",") if i.strip()):
        name, _, count = item.partition(":")
        if name not in PARTS or (count and not count.isdigit()) or (name == "stages" and not count):
            raise ConfigError(
                f"--freeze {text!r}: cannot read {item!r}; use backbone, backbone:EPOCHS, fpn, rpn, "
                "stages:K, comma-separated (e.g. backbone:2 or backbone,fpn)"
            )
        parts.append(name)
        if name == "stages":
            stages = int(count)
        elif count:
            epochs = int(count)
    return FreezePlan(tuple(parts), stages, epochs if epochs else None, text.replace(" ", ""))


# ---------------------------------------------------------------------------------------- parts
def _module(model: nn.Module, part: str) -> nn.Module | None:
    modules = dict(model.named_modules())
    return next((modules[p] for p in _PATHS[part] if p in modules), None)


def backbone_parameters(model: nn.Module) -> list[nn.Parameter]:
    """The backbone's parameters: a classifier's all but the head, a detector's feature extractor."""
    head = model.get_classifier() if hasattr(model, "get_classifier") else None
    if isinstance(head, nn.Module):
        head_ids = {id(p) for p in head.parameters()}
        return [p for p in model.parameters() if id(p) not in head_ids]
    body = _module(model, "backbone")
    return list(body.parameters()) if body is not None else []


def _stage_names(body: nn.Module) -> list[str]:
    """The backbone's stage modules, stem first (timm's feature_info, or a torchvision ResNet's layers)."""
    info = getattr(body, "feature_info", None)
    info = getattr(info, "info", info)
    if isinstance(info, list) and info and "module" in info[0]:
        return [i["module"] for i in info]
    children = [n for n, _ in body.named_children()]
    if "layer1" in children:
        return ["conv1"] + [n for n in children if n.startswith("layer")]
    raise ConfigError(
        f"--freeze stages:K: cannot tell the stages of {type(body).__name__}; freeze backbone instead"
    )


def _stage_parameters(model: nn.Module, k: int) -> list[nn.Parameter]:
    """The stem's and the first ``k`` stages' parameters: all before the first one of stage k + 1."""
    body = _module(model, "backbone") if not hasattr(model, "get_classifier") else model
    names = _stage_names(body)
    if k >= len(names) - 1:
        return backbone_parameters(model)
    after = names[k + 1].replace(".", "_")
    out = []
    for name, p in body.named_parameters():
        if name.replace(".", "_").startswith(after + "_"):
            break
        out.append(p)
    return out


def frozen_parameters(model: nn.Module, plan: FreezePlan) -> list[nn.Parameter]:
    found: list[nn.Parameter] = []
    for part in plan.parts:
        if part == "stages":
            found += _stage_parameters(model, plan.stages or 0)
        elif part == "backbone":
            found += backbone_parameters(model)
        else:
            module = _module(model, part)
            if module is None:
                raise ConfigError(f"--freeze {part}: {type(model).__name__} has no {part}")
            found += list(module.parameters())
    return found


def apply_freeze(model: nn.Module, plan: FreezePlan, frozen: bool) -> int:
    """Freeze (or unfreeze) the plan's parameters; how many tensors that is."""
    params = frozen_parameters(model, plan)
    if not params:
        raise ConfigError(f"--freeze {','.join(plan.parts)}: nothing of {type(model).__name__} matches")
    for p in params:
        p.requires_grad_(not frozen)
    return len(params)


def keep_frozen_norms(model: nn.Module) -> None:
    """After ``model.train()``: normalisation layers with all weights frozen go back to eval mode."""
    for m in model.modules():
        params = list(m.parameters(recurse=False))
        if isinstance(m, NORMS) and params and not any(p.requires_grad for p in params):
            m.eval()
