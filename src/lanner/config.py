"""The typed run config: saved with every run as YAML, read back, overridden with dotted keys.

Unknown keys fail with the closest valid key suggested, so a typo never silently does nothing.
"""

from __future__ import annotations

import dataclasses
import difflib
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from lanner.engine.schedules import SCHEDULES, ScheduleSpec
from lanner.errors import ConfigError


class TrainConfig(BaseModel):
    """Everything that defines a training run. ``None`` means "choose for me" (printed at start)."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    data: str = ""
    task: Literal["classify", "detect"] | None = None
    format: str | None = None
    run: str | None = None

    model: str | None = None
    pretrained: str | None = None  # a local weights file, or a lanner run / checkpoint to start from
    image_size: int | None = None
    batch_size: int | None = None
    epochs: int = 10
    time: str | None = None  # wall-clock budget like "15m" instead of a number of epochs

    optimizer: Literal["adamw", "adam", "sgd"] = "adamw"
    lr: float | Literal["auto"] | None = None  # auto: an LR range test picks it (lanner lr-find)
    weight_decay: float = 0.05
    momentum: float = 0.9
    label_smoothing: float = 0.0
    schedule: ScheduleSpec = Field(default_factory=ScheduleSpec)

    augment: Literal["none", "light", "default", "strong"] = "default"
    hflip: bool = True  # turn off for data where left and right differ (digits, text, some medical images)
    balance: Literal["none", "oversample", "weighted"] = "none"
    classes: list[str] | None = None  # keep only these classes
    rename: dict[str, str] = Field(default_factory=dict)  # old name -> new name (merges when equal)
    val_fraction: float = 0.2
    freeze_epochs: int = 0  # train only the classifier head for this many epochs first

    patience: int | None = None  # early stopping: epochs without improvement of `monitor`
    monitor: str | None = None  # default val_acc (classify) / val_map (detect)
    seed: int = 0
    device: str = "auto"
    precision: Literal["auto", "32", "bf16", "16-mixed"] = "auto"
    workers: int | None = None
    cache_dir: str | None = None
    max_image_pixels: int | None = None
    track: Literal["mlflow"] | None = None  # mirror the run into an experiment tracker
    tracking_uri: str | None = None  # default: MLFLOW_TRACKING_URI, else MLflow's own default
    experiment: str = "lanner"

    # Detection and tiling (used by --task detect).
    tile: int | None = None
    overlap: float = 0.2
    min_visibility: float = 0.5
    empty_tile_ratio: float = 0.2
    score_threshold: float = 0.25

    @field_validator("time")
    @classmethod
    def _duration(cls, v: str | None) -> str | None:
        if v is not None:
            parse_duration(v)
        return v

    @field_validator("schedule", mode="before")
    @classmethod
    def _schedule_name(cls, v: Any) -> Any:
        return {"name": v} if isinstance(v, str) else v

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)


class InferenceOptions(BaseModel):
    """How ``lanner eval`` and ``lanner predict`` run a trained model (shared by both commands)."""

    model_config = ConfigDict(extra="forbid")

    device: str = "auto"  # auto (CUDA when available), cpu, cuda, cuda:N
    precision: Literal["auto", "32", "bf16", "16-mixed"] = "auto"
    tile: int | None = None  # detection: tile size; 0 = whole images; None = the run's own tiling
    overlap: float | None = None
    merge: str | None = None
    merge_threshold: float | None = None
    full_image_pass: bool | None = None
    topk: int = 5  # classification: classes listed per image
    format: str = "coco"  # detection output: coco, csv, labelme, yolo
    render: Path | None = None  # detection: draw boxes on JPEG copies in this folder

    def tiling_overrides(self) -> dict[str, Any]:
        """The tiling settings given here, to override a detection run's own tiling."""
        keys = ("tile", "overlap", "merge", "merge_threshold", "full_image_pass")
        return {k: getattr(self, k) for k in keys if getattr(self, k) is not None}


def parse_duration(text: str) -> float:
    """'90s', '15m', '1h30m', '2h' -> seconds."""
    parts = re.fullmatch(r"\s*(?:(\d+(?:\.\d+)?)h)?\s*(?:(\d+(?:\.\d+)?)m)?\s*(?:(\d+(?:\.\d+)?)s)?\s*", text)
    if not parts or not any(parts.groups()):
        raise ValueError(f"cannot read duration {text!r}; use e.g. 90s, 15m, 1h30m")
    h, m, s = (float(g) if g else 0.0 for g in parts.groups())
    return h * 3600 + m * 60 + s


def _all_keys(model: type, prefix: str = "") -> list[str]:
    """Every valid dotted key of a config model (pydantic models and the dataclasses inside them)."""
    if dataclasses.is_dataclass(model):
        return [prefix + f.name for f in dataclasses.fields(model)]
    keys = []
    for name, field in model.model_fields.items():
        keys.append(prefix + name)
        ann = field.annotation
        if dataclasses.is_dataclass(ann) or (isinstance(ann, type) and issubclass(ann, BaseModel)):
            keys += _all_keys(ann, prefix + name + ".")
    return keys


def suggest_key(key: str) -> str:
    close = difflib.get_close_matches(key, _all_keys(TrainConfig), n=1, cutoff=0.5)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _raise_readable(err: ValidationError, source: str) -> None:
    lines = []
    for e in err.errors():
        key = ".".join(str(p) for p in e["loc"])
        if e["type"] in ("extra_forbidden", "unexpected_keyword_argument"):
            lines.append(f"unknown key {key!r}{suggest_key(key)}")
        else:
            lines.append(f"{key}: {e['msg']}")
    raise ConfigError(f"{source}: " + "; ".join(lines)) from None


def make_config(values: dict[str, Any], source: str = "config") -> TrainConfig:
    try:
        return TrainConfig(**values)
    except ValidationError as err:
        _raise_readable(err, source)
    raise AssertionError  # unreachable


def load_config(path: str | Path) -> TrainConfig:
    path = Path(path)
    try:
        values = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as e:
        raise ConfigError(f"{path}: cannot read config ({e})") from e
    if not isinstance(values, dict):
        raise ConfigError(f"{path}: expected a mapping of keys to values")
    return make_config(values, str(path))


def apply_overrides(values: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``key=value`` / ``schedule.name=step`` strings; values are parsed as YAML scalars."""
    values = dict(values)
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} must look like key=value")
        key, raw = item.split("=", 1)
        key = key.strip()
        if key not in _all_keys(TrainConfig):
            raise ConfigError(f"unknown key {key!r}{suggest_key(key)}")
        target = values
        *parents, leaf = key.split(".")
        for p in parents:
            node = target.get(p)
            target[p] = dict(node) if isinstance(node, dict) else {}
            target = target[p]
        target[leaf] = yaml.safe_load(raw)
    return values


__all__ = [
    "SCHEDULES",
    "InferenceOptions",
    "ScheduleSpec",
    "TrainConfig",
    "apply_overrides",
    "load_config",
    "make_config",
    "parse_duration",
]
