"""Pretrained weights into a model: key matching, class surgery on the heads, and the load report.

:func:`load_pretrained` takes a resolved :class:`~lanner.models.pretrained.WeightsSource` and
copies every tensor whose (possibly remapped) name and shape fit; ImageNet weights of a timm model
go into the timm backbone of an ``fcos_<backbone>`` detector under ``backbone.body.``. When the
source knows its classes (a lanner run, COCO) the heads' rows of the classes both share are copied
(*class surgery*): classifier rows, FCOS/RetinaNet classification-conv output channels, Faster R-CNN
box-predictor rows, SSD classification convs; new classes start fresh and dropped ones go.
The report (loaded / skipped for shape / missing / unexpected, where each class came from) is
returned for ``RUN/pretrained.json``; fewer than half the tensors loaded is refused.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor
from torchvision.models.detection.fcos import FCOSClassificationHead
from torchvision.models.detection.retinanet import RetinaNetClassificationHead
from torchvision.models.detection.ssd import SSDClassificationHead
from torchvision.models.detection.ssdlite import SSDLiteClassificationHead

from lanner.errors import CheckpointError, ConfigError
from lanner.models.pretrained import WeightsSource, fetch, read_weights

MIN_LOADED = 0.5  # refuse a load that fills less than this share of the tensors it is meant for
SHOWN = 6  # names listed per category in the printed summary


@dataclass(frozen=True)
class ClassTensor:
    """A head tensor whose first dimension is (groups x (offset + classes) x width) rows."""

    name: str
    width: int = 1  # rows per class (4 for a box regressor)
    offset: int = 0  # rows before class 0 (a background row)


@dataclass(frozen=True)
class Classes:
    """The target's classes and how the config renamed the data's (OLD -> NEW), for surgery."""

    names: list[str]
    rename: dict[str, str]
    offset: int = 0  # the model's background rows (label_offset)


# ------------------------------------------------------------------------------------ class heads
def class_tensors(model: nn.Module, offset: int = 0) -> list[ClassTensor]:
    """The tensors holding one row (or row group) per class, in every head lanner knows."""
    found: list[ClassTensor] = []
    head = model.get_classifier() if hasattr(model, "get_classifier") else None
    for name, m in model.named_modules():
        p = name + "." if name else ""
        if m is head and isinstance(m, nn.Module):
            found += [ClassTensor(p + n) for n, _ in m.named_parameters()]
        elif isinstance(m, FCOSClassificationHead | RetinaNetClassificationHead):
            found += [ClassTensor(p + "cls_logits." + n, 1, offset) for n in ("weight", "bias")]
        elif isinstance(m, FastRCNNPredictor):
            found += [ClassTensor(p + "cls_score." + n, 1, offset) for n in ("weight", "bias")]
            found += [ClassTensor(p + "bbox_pred." + n, 4, offset) for n in ("weight", "bias")]
        elif isinstance(m, SSDClassificationHead | SSDLiteClassificationHead):
            found += _ssd_class_tensors(p, m, offset)
    return found


def _ssd_class_tensors(prefix: str, head: nn.Module, offset: int) -> list[ClassTensor]:
    out = []
    for i, block in enumerate(head.module_list):
        convs = [(n, c) for n, c in block.named_modules() if isinstance(c, nn.Conv2d)]
        last = convs[-1][0]
        base = f"{prefix}module_list.{i}." + (last + "." if last else "")
        out += [ClassTensor(base + n, 1, offset) for n in ("weight", "bias")]
    return out


def class_origin(target: Classes, source: list[str]) -> dict[str, str | None]:
    """Each target class -> the source class its head rows come from (None: starts fresh)."""
    index = set(source)
    origin: dict[str, str | None] = {}
    for name in target.names:
        renamed = [old for old, new in target.rename.items() if new == name and old in index]
        origin[name] = name if name in index else (renamed[0] if renamed else None)
    return origin


def transplant(own: torch.Tensor, src: torch.Tensor, spec: ClassTensor, rows: tuple) -> torch.Tensor | None:
    """``own`` with the rows of kept classes copied from ``src``; ``rows`` = (pairs, own classes,
    source classes, source offset). None when the two do not decompose alike."""
    pairs, n_own, n_src, src_offset = rows
    own_block, src_block = (n_own + spec.offset) * spec.width, (n_src + src_offset) * spec.width
    groups = own.shape[0] // own_block
    if own.shape[1:] != src.shape[1:] or own.shape[0] % own_block or groups * src_block != src.shape[0]:
        return None
    out = own.clone()
    pairs = list(pairs) + ([(-1, -1)] if spec.offset and src_offset else [])  # -1: the background row
    w = spec.width
    for g in range(groups):
        for t, s in pairs:
            t0 = g * own_block + (t + spec.offset) * w
            s0 = g * src_block + (s + src_offset) * w
            out[t0 : t0 + w] = src[s0 : s0 + w]
    return out


# ------------------------------------------------------------------------------------ key matching
def _candidates(key: str, prefix: str) -> list[str]:
    rest = key[len(prefix) :]
    # timm's features_only wrappers flatten "stages.0" to "stages_0"; classification weights say "stages.0".
    return [rest, rest.replace("_", ".", 1)]


def match_keys(own: dict, source: dict) -> tuple[dict[str, str], str]:
    """own name -> source name, directly or under the timm backbone's prefix (whichever fits more),
    and the prefix whose tensors the source is meant for ("" = the whole model)."""
    direct = {k: k for k in own if k in source}
    best, scope = direct, ""
    for prefix in _prefixes_of(own):
        mapped = {}
        for k in (k for k in own if k.startswith(prefix)):
            hit = next((c for c in _candidates(k, prefix) if c in source), None)
            if hit is not None:
                mapped[k] = hit
        if len(mapped) > len(best):
            best, scope = mapped, prefix
    return best, scope


def _prefixes_of(own: dict) -> list[str]:
    return sorted({k[: k.index(".body.") + 6] for k in own if ".body." in k})


# -------------------------------------------------------------------------------------- loading
def source_state(source: WeightsSource, model: nn.Module) -> dict[str, torch.Tensor]:
    """The source's tensors: a fetched file read (a lanner checkpoint also gives its classes), or
    timm's pretrained weights built into the architecture (its filters applied) for timm tags."""
    fetch(source)
    if source.kind == "torchvision_backbone":
        return _torchvision_backbone_state(source)
    if source.kind != "timm":
        state, meta = read_weights(source.path)
        if meta is not None and source.classes is None:
            source.classes, source.kind = list(meta.classes), "run"
            source.class_offset = getattr(model, "label_offset", 0)
        return state
    return _timm_state(source, model)


def _timm_state(source: WeightsSource, model: nn.Module) -> dict[str, torch.Tensor]:
    import timm

    backbones = [m for m in model.modules() if getattr(m, "timm_name", None)]
    kwargs = dict(backbones[0].timm_kwargs) if backbones else {}
    try:
        built = timm.create_model(
            source.timm_name, pretrained=True, pretrained_cfg_overlay={"file": str(source.path)}, **kwargs
        )
    except Exception as e:  # a corrupt or foreign file in the cache
        raise CheckpointError(f"{source.path}: cannot read checkpoint ({type(e).__name__}: {e})") from None
    return built.state_dict()


def _torchvision_backbone_state(source: WeightsSource) -> dict[str, torch.Tensor]:
    """torchvision's ImageNet classifier weights, named as the detector's feature extractor names
    them under ``backbone.body.``: a ResNet's as they are (``layer1.0...``), a MobileNet's
    ``features.N...`` as ``N...`` (torchvision's extractors wrap ``features`` directly)."""
    state, _ = read_weights(source.path)
    return {k.removeprefix("features."): v for k, v in state.items()}


def load_pretrained(model: nn.Module, source: WeightsSource, classes: Classes) -> dict:
    """Load ``source`` into ``model``; the report for RUN/pretrained.json (ConfigError below half)."""
    state = source_state(source, model)
    own = model.state_dict()
    mapping, scope = match_keys(own, state)
    surgery, origin = _surgery(model, own, state, mapping, source, classes)
    usable = {k: state[s] for k, s in mapping.items() if own[k].shape == state[s].shape}
    usable.update(surgery)
    report = _report(source, own, state, mapping, usable, scope)
    if origin:
        report["classes"] = origin
    if report["loaded"] < MIN_LOADED * report["expected"]:
        raise ConfigError(
            f"--pretrained {source.describe()}: only {report['loaded']} of the {report['expected']} tensors "
            f"it should fill match {type(model).__name__}'s names and shapes; weights of another model?"
        )
    model.load_state_dict(usable, strict=False)
    return report


def _surgery(model, own, state, mapping, source: WeightsSource, classes: Classes):
    """Head rows of the classes the source knows, moved to where the target has them."""
    if source.classes is None:
        return {}, {}
    origin = class_origin(classes, source.classes)
    pairs = [(i, source.classes.index(origin[t])) for i, t in enumerate(classes.names) if origin[t]]
    rows = (pairs, len(classes.names), len(source.classes), source.class_offset)
    done = {}
    for spec in class_tensors(model, classes.offset):
        if spec.name in mapping and spec.name in own:
            moved = transplant(own[spec.name], state[mapping[spec.name]], spec, rows)
            if moved is not None:
                done[spec.name] = moved
    if not done:
        return {}, {}
    dropped = [s for s in source.classes if s not in set(origin.values())]
    return done, {"from": origin, "dropped": dropped}


def _report(source: WeightsSource, own, state, mapping, usable, scope: str) -> dict:
    in_scope = [k for k in own if k.startswith(scope)]
    skipped = sorted(k for k in mapping if k not in usable)
    used = set(mapping.values())
    return {
        "source": source.spec,
        "weights": source.describe(),
        "kind": source.kind,
        "file": str(source.path),
        "scope": scope.rstrip(".") or "model",
        "loaded": len(usable),
        "expected": len(in_scope),
        "skipped_shape": skipped,
        "missing": sorted(k for k in in_scope if k not in mapping),
        "unexpected": sorted(k for k in state if k not in used),
        "preprocessing": source.data_cfg or None,
    }


def summary(report: dict) -> list[str]:
    """The report as the lines a training run prints."""
    lines = [
        f"pretrained {report['weights']}: {report['loaded']}/{report['expected']} tensors of the "
        f"{report['scope']} loaded, {len(report['skipped_shape'])} skipped (shape), "
        f"{len(report['missing'])} missing, {len(report['unexpected'])} unexpected"
    ]
    for what in ("skipped_shape", "missing"):
        if report[what]:
            names = ", ".join(report[what][:SHOWN]) + (" ..." if len(report[what]) > SHOWN else "")
            lines.append(f"  {what.replace('_', ' ')}: {names}")
    if report.get("classes"):
        origin = report["classes"]["from"]
        kept = [f"{t}<-{s}" if s != t else t for t, s in origin.items() if s]
        new = [t for t, s in origin.items() if not s]
        lines.append(f"  class heads: kept {', '.join(kept) or 'none'}; new {', '.join(new) or 'none'}")
        lines.append(f"  dropped {len(report['classes']['dropped'])} source classes")
    return lines
