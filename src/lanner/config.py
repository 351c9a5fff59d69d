"""The typed run config: saved with every run as YAML, read back, overridden with dotted keys.

Unknown keys fail with the closest valid key suggested, so a typo never silently does nothing.
Each field also declares, once, its command-line option (help, flag name, the commands showing it):
``lanner.cli`` builds the options of ``train``, ``lr-find``, ``resume``, ``schedule``, ``eval`` and
``predict`` from these declarations, and the ranges given here are the only place options are checked.
"""

from __future__ import annotations

import dataclasses
import difflib
import re
import types
from pathlib import Path
from typing import Annotated, Any, Literal, Union, get_args, get_origin

import annotated_types
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from pydantic.dataclasses import dataclass as pydantic_dataclass
from pydantic_core import PydanticUndefined

from lanner.errors import ConfigError

# ------------------------------------------------------------------------------- option declarations
TRAINING = ("train", "lr-find", "probe")  # settings of the data and model: the LR range test, probes too
IMAGE_READERS = ("train", "lr-find", "check", "convert", "eval", "predict", "review", "crops", "shard")
INFERENCE = ("eval", "predict")
# Commands that read an annotation file naming other files (eval declares its own, in InferenceOptions).
DATASET_READERS = ("train", "lr-find", "probe", "check", "convert", "schedule", "crops", "shard")


def option(
    default: Any = PydanticUndefined,
    *,
    help: str,
    commands: tuple[str, ...] = TRAINING,
    flag: str | None = None,
    aliases: dict[str, tuple[str, ...]] | None = None,
    off_flag: tuple[str, Any, str] | None = None,
    **field_kwargs: Any,
) -> Any:
    """A config field that is also a command-line option, declared once.

    ``flag`` defaults to ``--field-name``; ``aliases`` adds more names on some commands;
    ``off_flag`` is an extra switch ``(flag, value, help)`` that sets the field to ``value``
    (``--no-tile`` sets ``tile`` to 0). Range constraints (``gt``, ``le``, ...) go to pydantic.
    """
    cli = {"commands": list(commands), "flag": flag, "aliases": dict(aliases or {}), "off_flag": off_flag}
    if default is PydanticUndefined and "default_factory" not in field_kwargs:
        default = None
    return Field(default, description=help, json_schema_extra={"cli": cli}, **field_kwargs)


@dataclasses.dataclass(frozen=True)
class ConfigOption:
    """One command-line option as a config field declares it."""

    key: str  # dotted config key, e.g. "schedule.warmup_epochs"
    flags: tuple[str, ...]  # "--warmup"; bools get "--hflip/--no-hflip" from the CLI
    help: str
    annotation: Any  # the field's type, None allowed
    default: Any  # the config's default (None: "choose for me")
    off_flag: tuple[str, Any, str] | None = None

    @property
    def name(self) -> str:
        """The Python name of the option's parameter (from its flag, so it is unique per command)."""
        return self.flags[0].lstrip("-").replace("-", "_")

    @property
    def value_type(self) -> Any:
        """The field's type without ``None`` and without constraints."""
        members = [_strip_annotated(a) for a in _union_members(self.annotation) if a is not type(None)]
        return members[0] if len(members) == 1 else Union[tuple(members)]  # noqa: UP007

    @property
    def choices(self) -> tuple[str, ...]:
        kind = self.value_type
        return tuple(str(c) for c in get_args(kind)) if get_origin(kind) is Literal else ()


def command_options(model: type, command: str) -> list[ConfigOption]:
    """The options ``command`` takes from ``model``'s fields, in declaration order.

    A top-level field without an ``option(...)`` declaration still gets a ``--flag`` on the training
    commands (so a new field is never silently missing from the CLI); a field of a nested spec
    (``schedule``) has a flag only where it declares one, the rest are ``--set schedule.x=...`` keys.
    """
    found = []
    for key, info, nested in _declared_fields(model):
        cli = _cli_meta(info, nested)
        if command in cli["commands"]:
            found.append(_option(key, info, cli, command))
    return found


def _option(key: str, info, cli: dict, command: str) -> ConfigOption:
    flags = (cli["flag"] or "--" + key.rsplit(".", 1)[-1].replace("_", "-"),)
    flags += tuple(cli["aliases"].get(command, ()))
    off_flag = tuple(cli["off_flag"]) if cli["off_flag"] else None
    return ConfigOption(key, flags, info.description or "", info.annotation, _default(info), off_flag)


def flag_for(model: type, key: str) -> str | None:
    """The option that sets ``key`` on any command (for messages); None when only --set reaches it."""
    commands = {c for _, info, nested in _declared_fields(model) for c in _cli_meta(info, nested)["commands"]}
    for command in sorted(commands):
        for opt in command_options(model, command):
            if opt.key == key:
                return opt.flags[0]
    return None


def _declared_fields(model: type, prefix: str = ""):
    """(dotted key, FieldInfo, is nested) of a model's fields, recursing into nested specs."""
    for name, info in _fields(model).items():
        kind = info.annotation
        if _is_model(kind):
            yield from _declared_fields(kind, prefix + name + ".")
        else:
            yield prefix + name, info, bool(prefix)


def _fields(model: type) -> dict:
    return model.__pydantic_fields__


def _is_model(kind: Any) -> bool:
    return isinstance(kind, type) and hasattr(kind, "__pydantic_fields__")


def _cli_meta(info, nested: bool) -> dict:
    extra = info.json_schema_extra if isinstance(info.json_schema_extra, dict) else {}
    undeclared = {"commands": [] if nested else list(TRAINING), "flag": None, "aliases": {}, "off_flag": None}
    return extra.get("cli", undeclared)


def _default(info) -> Any:
    return info.default_factory() if info.default_factory is not None else info.default


def _union_members(kind: Any) -> tuple:
    if get_origin(kind) in (Union, types.UnionType):
        return get_args(kind)
    return (kind,)


def _strip_annotated(kind: Any) -> Any:
    return get_args(kind)[0] if get_origin(kind) is Annotated else kind


# ---------------------------------------------------------------------------------- augmentation
# The geometric part of each preset: max rotation and shear (degrees), translation and scale (fraction).
GEOMETRY_PRESETS = {
    "auto": (0.0, 0.0, 0.0, 0.0),  # auto picks light or default (tasks.base.auto_augment): no geometry
    "none": (0.0, 0.0, 0.0, 0.0),
    "light": (0.0, 0.0, 0.0, 0.0),
    "default": (0.0, 0.0, 0.0, 0.0),
    "strong": (10.0, 5.0, 0.1, 0.1),
}


@pydantic_dataclass
class AugmentSpec:
    """Training augmentation: a preset (crop/zoom range, colour jitter; see the tasks' training modules)
    plus random rotation, shear, translation and scale, each drawn uniformly in +-the value per image
    (None: the preset's own, :data:`GEOMETRY_PRESETS`); box-aware for detection."""

    name: Literal["auto", "none", "light", "default", "strong"] = option(
        "auto", help="augmentation (auto: light for short runs, default for longer ones)", flag="--augment"
    )
    rotate: float | None = option(help="max rotation in degrees (augment.rotate)", commands=(), ge=0, le=180)
    shear: float | None = option(help="max shear in degrees (augment.shear)", commands=(), ge=0, le=45)
    translate: float | None = option(help="max shift, fraction of the side", commands=(), ge=0, le=0.5)
    scale: float | None = option(help="max scale change, fraction (0.1: 0.9x..1.1x)", commands=(), ge=0, lt=1)

    def geometry(self) -> tuple[float, float, float, float]:
        """(rotate, shear, translate, scale): the values set here, the preset's for the others."""
        preset = GEOMETRY_PRESETS[self.name]
        given = (self.rotate, self.shear, self.translate, self.scale)
        return tuple(p if g is None else float(g) for g, p in zip(given, preset, strict=True))


# ------------------------------------------------------------------------------------- schedules
SCHEDULES = (
    "constant",
    "step",
    "multistep",
    "exponential",
    "time",
    "polynomial",
    "linear",
    "cosine",
    "onecycle",
)


@pydantic_dataclass
class ScheduleSpec:
    """Shape of a schedule. Lengths are in epochs (fractions allowed) so they survive batch changes.

    The curves themselves are in :mod:`lanner.engine.schedules`.
    """

    name: str = option(
        "cosine",
        help="LR schedule: " + ", ".join(SCHEDULES),
        flag="--schedule",
        commands=("train", "resume", "schedule"),
        aliases={"schedule": ("--name",)},
    )
    warmup_epochs: float = option(
        0.0, help="warmup epochs", flag="--warmup", commands=("train", "schedule"), ge=0
    )
    warmup_start_factor: float = 0.1  # LR at step 0 of the warmup, as a fraction of the base LR
    min_lr_factor: float = 0.0  # where cosine / linear / polynomial end, as a fraction of the base LR
    step_size: float = 10.0  # step: decay every step_size epochs
    milestones: list[float] = dataclasses.field(default_factory=list)  # multistep: epochs at which to decay
    gamma: float | None = None  # decay factor (step, multistep, exponential per epoch, time-based rate)
    power: float = 2.0  # polynomial
    pct_start: float = 0.3  # onecycle: fraction of the segment spent rising
    div_factor: float = 25.0  # onecycle: start LR = base / div_factor
    final_div_factor: float = 1e4  # onecycle: end LR = start LR / final_div_factor

    @field_validator("name")
    @classmethod
    def _known(cls, name: str) -> str:
        if name not in SCHEDULES:
            close = difflib.get_close_matches(name, SCHEDULES, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ValueError(f"unknown schedule {name!r}{hint}; choose from {', '.join(SCHEDULES)}")
        return name

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


# ---------------------------------------------------------------------------------------- training
Precision = Literal["auto", "32", "bf16", "16-mixed"]
PositiveLR = Annotated[float, Field(ge=0)]  # 0 is allowed: a run that must not learn (tests, probes)


class TrainConfig(BaseModel):
    """Everything that defines a training run. ``None`` means "choose for me" (printed at start)."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    # Each command's DATA argument, not an option.
    data: str = option("", help="dataset folder or annotation file (any supported format)", commands=())
    # Task and tracker names are the plug-ins' (tasks/, engine/tracking.py); lanner.api checks them.
    task: str | None = option(help="classify or detect (inferred from the data)")
    format: str | None = option(
        help="dataset format (auto-detected)", commands=(*TRAINING, "schedule", "shard")
    )
    run: str | None = option(
        help="run directory (default runs/<task>-<time>; lr-find: runs/lr-find-<task>-<time>)"
    )

    model: str | None = option(help="model name (any timm model for classification)")
    pretrained: str | None = option(
        help="weights to start from: imagenet, coco (torchvision detectors), a timm tag "
        "(resnet50.a1_in1k), a weights file or a lanner run"
    )
    image_size: int | None = option(help="input size in pixels", commands=(*TRAINING, "shard"), gt=0)
    batch_size: int | None = option(help="images per step", commands=(*TRAINING, "schedule"), gt=0)
    epochs: int = option(
        10, help="number of epochs (resume: the new total)", commands=("train", "resume", "schedule"), ge=1
    )
    time: str | None = option(
        help="wall-clock budget instead of epochs, e.g. 15m", commands=("train", "resume")
    )

    optimizer: Literal["adamw", "adam", "sgd"] = option("adamw", help="optimizer")
    lr: PositiveLR | Literal["auto"] | None = option(
        help="peak learning rate, or auto (an LR range test picks it)",
        commands=("train", "resume", "schedule"),
    )
    weight_decay: float = option(0.05, help="weight decay", ge=0)
    momentum: float = option(0.9, help="SGD momentum", ge=0)
    label_smoothing: float = option(0.0, help="classification: label smoothing", ge=0, lt=1)
    mixup: float = option(
        0.0, help="classification: mixup alpha (e.g. 0.2; 0 = off); with --cutmix, each batch picks one", ge=0
    )
    cutmix: float = option(0.0, help="classification: cutmix alpha (e.g. 1.0; 0 = off)", ge=0)
    erase: float = option(
        0.0,
        help="classification: random erasing, the share of training images given a noise rectangle of "
        "2-33% of their area (e.g. 0.25; 0 = off)",
        ge=0,
        le=1,
    )
    progressive: float = option(
        0.0,
        help="classification: progressive resizing, the first epoch trains at this fraction of the input "
        "size (e.g. 0.6; 0 = off), growing to the full size for the last quarter of the run",
        ge=0,
        lt=1,
    )
    ema: float = option(
        0.0,
        help="keep an exponential moving average of the weights with this decay (e.g. 0.9998; 0 = off): "
        "it is validated, checkpointed and used by eval/predict",
        ge=0,
        lt=1,
    )
    clip_grad: float | None = option(help="clip the gradients' total norm to this value", gt=0)
    schedule: ScheduleSpec = Field(default_factory=ScheduleSpec)  # its fields declare their own options

    augment: AugmentSpec = Field(default_factory=AugmentSpec)  # --augment NAME; --set augment.rotate=15
    hflip: bool = option(
        True, help="random horizontal flips (off for data where left and right differ: digits, text)"
    )
    balance: Literal["auto", "none", "oversample", "weighted", "logit_adjust"] = option(
        "auto",
        help="imbalanced classes: auto (logit adjustment when the largest class is over 3x the "
        "smallest), none, oversample, weighted (loss), logit_adjust",
    )
    classes: list[str] | None = option(help="keep only these classes, comma-separated")
    rename: dict[str, str] = option(
        default_factory=dict, help="OLD=NEW class rename (repeatable; merges when equal)"
    )
    val_fraction: float = option(
        0.2,
        help="share of each class drawn for validation when the data has no val split",
        gt=0,
        lt=1,
        commands=(*TRAINING, "shard"),
    )
    freeze_epochs: int = option(
        0,
        help="train only the head for N epochs first (same as --freeze backbone:N)",
        commands=("train",),
        ge=0,
    )
    freeze: str | None = option(
        help="freeze backbone (whole run), backbone:N (N epochs, then unfrozen: a new segment), "
        "stages:K (stem + K stages), fpn, rpn; comma-separated (lift it later: resume --unfreeze)",
        commands=("train",),
        pattern=r"^\s*(backbone|fpn|rpn|stages)(:\d+)?\s*(,\s*(backbone|fpn|rpn|stages)(:\d+)?\s*)*$",
    )
    backbone_lr: float | None = option(
        help="the backbone's LR as a fraction of --lr (e.g. 0.1)", commands=("train",), gt=0
    )

    patience: int | None = option(
        help="early stopping: epochs without improvement of --monitor", commands=("train", "resume"), ge=0
    )
    monitor: str | None = option(
        help="metric for best checkpoint (val_acc, val_loss, val_map)", commands=("train", "resume")
    )
    eval_train: int | None = option(
        help="training images scored like val each epoch, no augmentation, for train-vs-val curves "
        "(default: as many as val; 0: none)",
        ge=0,
    )
    seed: int = option(0, help="random seed (split, order, augmentation)", commands=(*TRAINING, "shard"))
    device: str = option("auto", help="auto, cpu, cuda, cuda:1")
    precision: Precision = option("auto", help="numeric precision")
    sync_bn: bool | None = option(
        help="several processes: BatchNorm statistics over all their batches (SyncBatchNorm, GPUs only; "
        "default: on for detection on several GPUs)",
        commands=("train", "resume"),
    )
    workers: int | None = option(
        help="processes decoding images into the cache (default: one per CPU); streaming from shards: "
        "loader workers per process (default 2)",
        commands=(*TRAINING, "shard"),
        ge=1,
    )
    cache_dir: str | None = option(help="decoded-image cache (default: $LANNER_CACHE or ~/.cache/lanner)")
    max_image_pixels: int | None = option(
        help="Pillow's decompression-bomb limit in pixels: raise it for trusted huge images (0: none)",
        commands=IMAGE_READERS,
        ge=0,
    )
    allow_outside_root: bool = option(
        False,
        help="read images an annotation file places outside its dataset folder (only for files you trust)",
        commands=DATASET_READERS,
    )
    track: str | None = option(
        help="mirror the run into experiment trackers: mlflow, tensorboard, wandb (several: comma-separated)",
        commands=("train",),
    )
    tracking_uri: str | None = option(
        help="MLflow tracking server (default: MLFLOW_TRACKING_URI, else MLflow's own)", commands=("train",)
    )
    experiment: str = option(
        "lanner", help="experiment name in the tracker (MLflow experiment, W&B project)", commands=("train",)
    )
    run_name: str | None = option(
        help="the run's name in the tracker (default: the run directory's name)", commands=("train",)
    )
    tags: list[str] | None = option(
        help="tags for the tracker's run, comma-separated (MLflow: key=value or key)", commands=("train",)
    )

    # Detection and tiling (used by --task detect).
    tile: int | None = option(help="detection: tile size in pixels for huge images", ge=0)
    overlap: float = option(0.2, help="tile overlap: fraction (<1) or pixels", ge=0)
    min_visibility: float = option(0.5, help="tiles: drop boxes less visible than this", ge=0, le=1)
    empty_tile_ratio: float = option(0.2, help="tiles: empty tiles per tile with objects", ge=0)
    score_threshold: float = option(0.25, help="detection: lowest score kept", ge=0, le=1)

    @field_validator("time")
    @classmethod
    def _duration(cls, v: str | None) -> str | None:
        if v is not None and parse_duration(v) <= 0:
            raise ValueError(f"{v!r} is no time at all; give a positive duration, e.g. 90s, 15m, 1h30m")
        return v

    @field_validator("augment", mode="before")
    @classmethod
    def _augment_name(cls, v: Any) -> Any:
        return {"name": v} if isinstance(v, str) else v  # `augment: light` (runs before 0.2: the preset)

    @field_validator("schedule", mode="before")
    @classmethod
    def _schedule_name(cls, v: Any) -> Any:
        return {"name": v} if isinstance(v, str) else v

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)


# --------------------------------------------------------------------------------------- inference
class InferenceOptions(BaseModel):
    """How ``eval`` and ``predict`` run a trained model; ``None``: the run's own setting."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    device: str = option("auto", help="auto (CUDA when available), cpu, cuda, cuda:N", commands=INFERENCE)
    precision: Precision = option(
        "auto", help="numeric precision (auto: bf16 on a GPU, 32 on a CPU)", commands=INFERENCE
    )
    tile: int | None = option(
        help="detection: tile size (default: the run's own tiling; 0: whole images)",
        commands=INFERENCE,
        off_flag=("--no-tile", 0, "detection: run on whole images (downscaled), no tiling"),
        ge=0,
    )
    overlap: float | None = option(
        help="detection: tile overlap, fraction or pixels", commands=INFERENCE, ge=0
    )
    merge: str | None = option(help="detection: merge tiles with nms, nmm or wbf", commands=INFERENCE)
    merge_threshold: float | None = option(
        help="detection: overlap above which boxes merge", commands=INFERENCE, ge=0, le=1
    )
    full_image_pass: bool | None = option(
        help="detection: add a downscaled whole-image pass", commands=INFERENCE
    )
    allow_outside_root: bool = option(
        False,
        help="DATA given: read images its annotation file places outside its folder (files you trust)",
        commands=("eval",),
    )
    weights: list[float] | None = option(
        help="several RUNs (an ensemble): each run's weight, comma-separated in the runs' order, e.g. 2,1,1",
        commands=INFERENCE,
    )
    tta: bool = option(
        False,
        help="test-time augmentation: classification averages a mirror image and corner crops, detection "
        "fuses a mirror image and a smaller scale by WBF (tiled: the mirror image)",
        commands=INFERENCE,
    )
    classify: Path | None = option(
        help="detection: re-label every detected box with this classifier run (detect, then classify)",
        commands=INFERENCE,
    )
    score_threshold: float | None = option(
        help="score threshold for every class (default: each class's own, chosen on val)",
        commands=INFERENCE,
        ge=0,
        le=1,
    )
    topk: int = option(5, help="classification: classes listed per image", commands=("predict",), ge=1)
    format: str | None = option(
        help="detection output: coco (+ coco_results.json), csv, labelme, yolo; cvat, labelstudio "
        "(pre-annotations with scores)",
        commands=("predict",),
    )
    columns: str | None = option(
        help="classification: a submission CSV of HEADER=SOURCE columns, SOURCE one of stem, file, path "
        "(the image), name, index, score (the prediction); e.g. Id=stem,Expected=name",
        commands=("predict",),
    )
    render: Path | None = option(help="detection: draw boxes on JPEG copies here", commands=("predict",))

    def as_kwargs(self) -> dict[str, Any]:
        """The keyword arguments ``api.evaluate`` / ``api.predict`` take: device and precision, then only
        the detection settings given (the rest stay the run's own). ``topk`` is predict's own argument."""
        given = self.model_dump(
            exclude={"device", "precision", "topk", "allow_outside_root", "weights", "tta"}, exclude_none=True
        )
        switches = {k: True for k in ("allow_outside_root", "tta") if getattr(self, k)}  # only when on
        weights = {"weights": self.weights} if self.weights is not None else {}
        return {"device": self.device, "precision": self.precision, **switches, **weights, **given}

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


# -------------------------------------------------------------------------------------- validation
def _all_keys(model: type, prefix: str = "") -> list[str]:
    """Every valid dotted key of a config model (and of the specs inside it)."""
    keys = []
    for name, info in _fields(model).items():
        keys.append(prefix + name)
        if _is_model(info.annotation):
            keys += _all_keys(info.annotation, prefix + name + ".")
    return keys


def suggest_key(key: str) -> str:
    close = difflib.get_close_matches(key, _all_keys(TrainConfig), n=1, cutoff=0.5)
    return f" (did you mean {close[0]!r}?)" if close else ""


_BOUNDS = {
    annotated_types.Gt: ("gt", ">"),
    annotated_types.Ge: ("ge", ">="),
    annotated_types.Lt: ("lt", "<"),
    annotated_types.Le: ("le", "<="),
}


def valid_range(model: type, key: str) -> str:
    """'> 0 and < 1' from the field's constraints ('' when it has none)."""
    info = _field_at(model, key)
    if info is None:
        return ""
    found = list(info.metadata)
    for member in _union_members(info.annotation):
        if get_origin(member) is Annotated:
            found += [c for m in get_args(member)[1:] for c in getattr(m, "metadata", [m])]
    bounds = [(_BOUNDS[type(c)], c) for c in found if type(c) in _BOUNDS]
    parts = [f"{sign} {getattr(c, attr)}" for (attr, sign), c in bounds]
    return " and ".join(parts)


def _field_at(model: type, key: str):
    *parents, leaf = key.split(".")
    for name in parents:
        info = _fields(model).get(name)
        if info is None or not _is_model(info.annotation):
            return None
        model = info.annotation
    return _fields(model).get(leaf)


def _error_key(model: type, loc: tuple) -> str:
    """The config key an error is about (a union adds its member's name to the location: dropped)."""
    keys, parts = set(_all_keys(model)), [str(p) for p in loc if not isinstance(p, int)]
    for n in range(len(parts), 0, -1):
        if ".".join(parts[:n]) in keys:
            return ".".join(parts[:n])
    return ".".join(parts)


def _describe(model: type, key: str, errors: list[dict]) -> str:
    """One bad key (a union field reports each member's complaint), named with the option that sets it."""
    if errors[0]["type"] in ("extra_forbidden", "unexpected_keyword_argument"):
        return _unknown_key(model, key)
    flag = flag_for(model, key)
    name = f"{key} ({flag})" if flag else key
    out_of_range = [e for e in errors if e["type"].startswith(("greater_than", "less_than"))]
    if out_of_range:
        alternatives = [e["ctx"]["expected"] for e in errors if e["type"] == "literal_error"]
        valid = " or ".join([valid_range(model, key), *alternatives])
        return f"{name}: {out_of_range[0]['input']} is out of range; valid: {valid}"
    messages = dict.fromkeys(e["msg"].removeprefix("Value error, ") for e in errors)
    return f"{name}: " + "; or ".join(messages)


def _unknown_key(model: type, key: str) -> str:
    """A key the config has no place for; a nested one written flat (``augment.rotate: 10``) is shown
    how to nest it, since the closest known key would be the very same name."""
    if "." in key and key in _all_keys(model):
        *parents, leaf = key.split(".")
        nested = "".join(f"{p}: {{" for p in parents) + f"{leaf}: ..." + "}" * len(parents)
        return f"{key!r} is a nested key: write it as {nested} (on the command line: --set {key}=...)"
    return f"unknown key {key!r}{suggest_key(key)}"


def _raise_readable(model: type, err: ValidationError, source: str) -> None:
    by_key: dict[str, list[dict]] = {}
    for error in err.errors():
        by_key.setdefault(_error_key(model, error["loc"]), []).append(error)
    lines = [_describe(model, key, errors) for key, errors in by_key.items()]
    raise ConfigError(f"{source}: " + "; ".join(lines)) from None


def validated(model: type, values: dict[str, Any], source: str):
    """``model(**values)``, or a ConfigError naming every bad key, its option and its valid range."""
    try:
        return model(**values)
    except ValidationError as err:
        _raise_readable(model, err, source)
    raise AssertionError  # unreachable


def make_config(values: dict[str, Any], source: str = "config") -> TrainConfig:
    return validated(TrainConfig, values, source)


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
    "ConfigOption",
    "InferenceOptions",
    "ScheduleSpec",
    "TrainConfig",
    "apply_overrides",
    "command_options",
    "load_config",
    "make_config",
    "option",
    "parse_duration",
    "validated",
]
