"""The `lanner` command: a thin layer that turns options into API calls and errors into clear lines.

The options that set config values are not written here: each field of :class:`TrainConfig` (and of
:class:`InferenceOptions` for ``eval``/``predict``) declares its flag, help and commands once in
:mod:`lanner.config`, and :func:`config_options` adds them to the commands' signatures.
"""

from __future__ import annotations

import contextlib
import importlib
import inspect
import json
import os
import signal
import sys
import tempfile
import traceback
import typing
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, get_origin

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from lanner import __version__
from lanner.config import (
    ConfigOption,
    InferenceOptions,
    TrainConfig,
    apply_overrides,
    command_options,
    load_config,
    make_config,
    validated,
)
from lanner.errors import ConfigError, Interrupted, LannerError, Terminated


class _LazyModule:
    """Stands for a module until an attribute is asked for, then imports it and answers from it.
    Not a module in ``sys.modules`` (as the stdlib's LazyLoader recipe makes): tools that scan
    ``sys.modules`` (``inspect.getmodule``, which torch runs while it imports) would trigger the
    import there, half-way through importing torch, and fail on the circular import."""

    def __init__(self, name: str) -> None:
        self._name = name

    def __getattr__(self, attr: str):
        return getattr(importlib.import_module(self._name), attr)


def _lazy_module(name: str):
    """``name`` imported on first use: the api pulls in torch, which --help, usage errors and bad
    options should not wait seconds for."""
    return sys.modules.get(name) or _LazyModule(name)


api = _lazy_module("lanner.api")  # the library, reached only through its api

# Completion (--install-completion, or _LANNER_COMPLETE=complete_bash) is answered by typer before
# any command runs: it never touches `api`, so it costs no torch import.
app = typer.Typer(
    no_args_is_help=True,
    rich_markup_mode=None,
    pretty_exceptions_show_locals=False,
    help="Train, evaluate and share image classifiers and object detectors on your own images.",
)
console = Console()

Opt = typer.Option
KEYWORD = inspect.Parameter.KEYWORD_ONLY


# ------------------------------------------------------------------ options generated from the config
def config_options(command: str, *models: type) -> Callable[[Callable], Callable]:
    """Decorator: the command also takes one option per field of ``models`` declared for ``command``.

    The function receives them as ``given``: {dotted config key: value} of the options given on the
    command line (not given: absent, so a config file's value or the default stands).
    """
    options = [opt for model in models for opt in command_options(model, command)]

    def decorate(function: Callable) -> Callable:
        def callback(**values: Any) -> Any:
            given = _given(options, values)  # before **values is unpacked: it pops them
            return function(**values, given=given)

        generated = [param for opt in options for param in _parameters(opt)]
        callback.__name__, callback.__doc__ = function.__name__, function.__doc__
        callback.__signature__ = inspect.Signature([*_own_parameters(function), *generated])
        return callback

    return decorate


def _own_parameters(function: Callable) -> list[inspect.Parameter]:
    """The function's parameters but ``given``, their annotations resolved (typer reads them as objects)."""
    hints = typing.get_type_hints(function, include_extras=True)
    params = inspect.signature(function).parameters.values()
    return [p.replace(annotation=hints[p.name], kind=KEYWORD) for p in params if p.name != "given"]


def _parameters(opt: ConfigOption) -> list[inspect.Parameter]:
    """The typer parameter of one config option (plus its off switch, like --no-tile)."""
    flags = opt.flags
    if opt.value_type is bool:
        flags = (f"{flags[0]}/--no-{flags[0][2:]}", *flags[1:])
    info = Opt(*flags, help=_help(opt), show_default=False)
    params = [inspect.Parameter(opt.name, KEYWORD, default=None, annotation=Annotated[_cli_type(opt), info])]
    if opt.off_flag:
        flag, _, help_text = opt.off_flag
        switch = Annotated[bool, Opt(flag, help=help_text)]
        params.append(inspect.Parameter(_switch_name(opt), KEYWORD, default=False, annotation=switch))
    return params


def _cli_type(opt: ConfigOption) -> Any:
    """What typer parses: lists as one comma-separated text, maps as repeated KEY=VALUE, choices and
    unions (``--lr 0.01`` or ``--lr auto``) as text that the config validates."""
    kind = opt.value_type
    origin = get_origin(kind)
    if origin is dict:
        return list[str] | None
    if origin is not None or kind is Any:
        return str | None
    return kind | None


def _help(opt: ConfigOption) -> str:
    text = f"{opt.help}: {', '.join(opt.choices)}" if opt.choices else opt.help
    default = _shown_default(opt)
    return f"{text}  [default: {default}]" if default else text


def _shown_default(opt: ConfigOption) -> str:
    """The config's default ('' for "choose for me"); a config file or --set may replace it."""
    if opt.default is None or opt.default == {} or opt.default == []:
        return ""
    if isinstance(opt.default, bool):
        return opt.flags[0][2:] if opt.default else f"no-{opt.flags[0][2:]}"
    return str(opt.default)


def _switch_name(opt: ConfigOption) -> str:
    return opt.off_flag[0].lstrip("-").replace("-", "_")


def _given(options: list[ConfigOption], values: dict[str, Any]) -> dict[str, Any]:
    """Pop the generated options from ``values``; the ones given, as config values by dotted key."""
    given = {}
    for opt in options:
        value = values.pop(opt.name)
        if opt.off_flag and values.pop(_switch_name(opt)):
            value = opt.off_flag[1]
        if value is not None:
            given[opt.key] = _config_value(opt, value)
    return given


def _config_value(opt: ConfigOption, value: Any) -> Any:
    origin = get_origin(opt.value_type)
    if origin is list:
        return [item.strip() for item in value.split(",") if item.strip()]
    if origin is dict:
        return _pairs(opt.flags[0], value)
    return value


def _pairs(flag: str, items: list[str]) -> dict[str, str]:
    pairs = [item.split("=", 1) for item in items]
    if any(len(pair) != 2 for pair in pairs):
        raise typer.BadParameter("takes OLD=NEW", param_hint=flag)
    return {old.strip(): new.strip() for old, new in pairs}


def _nested(flat: dict[str, Any]) -> dict[str, Any]:
    """{"schedule.name": "step"} -> {"schedule": {"name": "step"}}."""
    nested: dict[str, Any] = {}
    for key, value in flat.items():
        *parents, leaf = key.split(".")
        target = nested
        for name in parents:
            target = target.setdefault(name, {})
        target[leaf] = value
    return nested


def _train_config(config_file: Path | None, sets: list[str] | None, given: dict[str, Any]) -> TrainConfig:
    """Config file < options given < --set key=value, then validated once as a TrainConfig."""
    values = load_config(config_file).model_dump(mode="json", exclude_unset=True) if config_file else {}
    for key, value in given.items():
        *parents, leaf = key.split(".")
        target = values
        for name in parents:  # a nested spec: replace only the key given, keep the file's others
            target[name] = dict(target.get(name) or {})
            target = target[name]
        target[leaf] = value
    values = apply_overrides(values, sets or [])
    return make_config(values, str(config_file or "options"))


def _with_data(given: dict[str, Any], data: str | None) -> dict[str, Any]:
    return {**given, "data": data} if data else given


def _require_data(cfg: TrainConfig) -> None:
    if not cfg.data:
        raise ConfigError("give DATA (or `data:` in --config)")


def _limit_image_pixels(given: dict[str, Any]) -> None:
    """--max-image-pixels (checked by the config's rule) for this process's image reads."""
    pixels = given.pop("max_image_pixels", None)
    if pixels is not None:
        api.set_max_image_pixels(make_config({"max_image_pixels": pixels}, "options").max_image_pixels)


def _inference_options(given: dict[str, Any]) -> InferenceOptions:
    _limit_image_pixels(given)
    return validated(InferenceOptions, given, "options")


ConfigFileOpt = Annotated[Path | None, Opt("--config", help="YAML config (options given here override it)")]
SetOpt = Annotated[
    list[str] | None,
    Opt("--set", help="dotted override, applied last, e.g. schedule.gamma=0.5"),
]
DevicesOpt = Annotated[
    int, Opt(help="processes on this machine, one per GPU (or CPU processes); >1 starts them with torchrun")
]
InferDevicesOpt = Annotated[
    int,
    Opt(
        "--devices",
        help="processes on this machine, one per GPU (or CPU processes), each on its share of the images; "
        ">1 starts them with torchrun",
    ),
]
NoEvalOpt = Annotated[bool, Opt("--no-eval", help="skip the evaluation (and report) after training")]
JsonOpt = Annotated[
    bool, Opt("--json", help="end with one JSON line: the files written and the headline metrics")
]


def _print_json(command: str, result: dict) -> None:
    """The last line of stdout, for scripts: ``lanner eval RUN --json | tail -n 1``. Only process 0
    of a multi-process run prints it."""
    if api.is_main_process():
        console.file.flush()
        sys.stdout.write(json.dumps({"command": command, **result}, default=str) + "\n")
        sys.stdout.flush()


# ------------------------------------------------------------------------------------------- commands
@app.command()
@config_options("train", TrainConfig)
def train(
    data: Annotated[
        str, typer.Argument(help="dataset folder or annotation file (any supported format)")
    ] = "",
    config: ConfigFileOpt = None,
    set_: SetOpt = None,
    dry_run: Annotated[bool, Opt(help="print and plot the LR schedule, then stop")] = False,
    devices: DevicesOpt = 1,
    no_eval: NoEvalOpt = False,
    json_: JsonOpt = False,
    *,
    given: dict[str, Any],
) -> None:
    """Train a classifier or detector; everything goes to one run directory."""
    cfg = _train_config(config, set_, _with_data(given, data))
    _require_data(cfg)
    _errors_go_to(cfg.run)
    if dry_run:
        _show_schedule(
            cfg, None, api.count_images(cfg.data, cfg.format, cfg.allow_outside_root), "schedule.png"
        )
        return
    api.relaunch(devices, device=cfg.device, sync_bn=cfg.sync_bn)
    run = api.train(cfg, console, evaluate_after=not no_eval)
    if json_:
        _print_json("train", api.run_summary(run))


@app.command()
@config_options("probe", TrainConfig)
def probe(
    data: Annotated[str, typer.Argument(help="classification dataset (folder or annotation file)")] = "",
    config: ConfigFileOpt = None,
    set_: SetOpt = None,
    no_report: Annotated[bool, Opt("--no-report")] = False,
    *,
    given: dict[str, Any],
) -> None:
    """Linear probe: pretrained features + logistic regression, written as a run (eval, predict, export)."""
    cfg = _train_config(config, set_, _with_data(given, data))
    _require_data(cfg)
    _errors_go_to(cfg.run)
    api.probe(cfg, console, report=not no_report)


@app.command(name="lr-find")
@config_options("lr-find", TrainConfig)
def lr_find(
    data: Annotated[str, typer.Argument(help="dataset folder or annotation file")] = "",
    config: ConfigFileOpt = None,
    set_: SetOpt = None,
    start_lr: Annotated[float, Opt(help="first LR of the range")] = 1e-7,
    end_lr: Annotated[float, Opt(help="last LR of the range")] = 10.0,
    steps: Annotated[int, Opt(help="training steps over the range (stops early on divergence)")] = 100,
    *,
    given: dict[str, Any],
) -> None:
    """LR range test: train briefly with a rising LR, plot the loss, suggest the LR to train with."""
    cfg = _train_config(config, set_, _with_data(given, data))
    _require_data(cfg)
    _errors_go_to(cfg.run)
    api.lr_find(cfg, console, start_lr=start_lr, end_lr=end_lr, steps=steps)


@app.command()
@config_options("resume", TrainConfig)
def resume(
    run: Annotated[Path, typer.Argument(help="run directory")],
    no_eval: NoEvalOpt = False,
    devices: DevicesOpt = 1,
    json_: JsonOpt = False,
    unfreeze: Annotated[
        bool, Opt("--unfreeze", help="train every layer from now on (a run trained with --freeze)")
    ] = False,
    *,
    given: dict[str, Any],
) -> None:
    """Continue a run; options given replace the run's from now on (a new segment of the same run)."""
    _errors_go_to(run)
    if given.get("lr") == "auto":
        raise ConfigError("--lr auto picks the LR of a new run (lanner train); resume takes a number")
    flags = {"unfreeze": True} if unfreeze else {}  # only what was given reaches the api
    if devices != 1:  # refused here rather than once in each process
        api.check_resume(run, **flags, **_nested(given))
    api.relaunch(devices, device=given.get("device"), sync_bn=given.get("sync_bn"))
    api.resume(run, console, evaluate_after=not no_eval, **flags, **_nested(given))
    if json_:
        _print_json("resume", api.run_summary(run))


def _show_schedule(cfg, steps_per_epoch, num_images, out) -> None:
    rows, path = api.schedule_preview(cfg, steps_per_epoch, out, num_images)
    table = Table("epoch", "LR first step", "LR last step", title=f"{cfg.schedule.name} schedule")
    for epoch, first, last in rows:
        table.add_row(str(epoch), f"{first:.6g}", f"{last:.6g}")
    console.print(table)
    console.print(f"plot: {path}")


@app.command()
@config_options("schedule", TrainConfig)
def schedule(
    data: Annotated[str | None, typer.Argument(help="dataset, to count steps per epoch")] = None,
    config: ConfigFileOpt = None,
    steps_per_epoch: Annotated[int | None, Opt(help="instead of DATA", min=1)] = None,
    set_: SetOpt = None,
    out: Annotated[Path, Opt(help="plot file")] = Path("schedule.png"),
    *,
    given: dict[str, Any],
) -> None:
    """Print the LR schedule per epoch and plot it, before any training."""
    cfg = _train_config(config, set_, _with_data(given, data))
    counted = cfg.data and steps_per_epoch is None
    n = api.count_images(cfg.data, cfg.format, cfg.allow_outside_root) if counted else None
    _show_schedule(cfg, steps_per_epoch or (None if n else 100), n, out)


@app.command()
@config_options("check", TrainConfig)
def check(
    data: Annotated[str, typer.Argument()],
    format: Annotated[str | None, Opt(help="skip auto-detection")] = None,
    strict: Annotated[bool, Opt(help="problems are errors")] = False,
    json_: Annotated[bool, Opt("--json", help="machine-readable output")] = False,
    *,
    given: dict[str, Any],
) -> None:
    """Read a dataset, verify every image, summarise it and list every problem with its file."""
    _limit_image_pixels(given)
    summary = api.check(data, format, strict, given.get("allow_outside_root", False))
    if json_:
        sys.stdout.write(json.dumps(summary, indent=2) + "\n")
        return
    _print_summary(summary)


def _print_summary(s: dict) -> None:
    console.print(
        f"[bold]{s['path']}[/]: {s['format']} ({s['task']}), {s['num_images']} images, "
        f"{s['num_classes']} classes, splits {s['images_per_split']}"
    )
    counts = s.get("images_per_class") or s.get("boxes_per_class") or {}
    table = Table("class", "images" if "images_per_class" in s else "boxes")
    for name, n in counts.items():
        table.add_row(name, str(n))
    console.print(table)
    console.print(f"imbalance ratio (largest / smallest class): {s['imbalance_ratio']}")
    for dim in ("width", "height"):
        if s[dim]:
            d = s[dim]
            console.print(f"{dim}: min {d['min']}, median {d['median']:g}, max {d['max']}")
    _print_issues(s)


def _print_issues(s: dict) -> None:
    console.print(f"problems: {s['num_issues']}")
    for issue in s["issues"]:
        console.print(f"  {issue['path']}: {issue['problem']} ({issue['action']})", markup=False)


@app.command()
@config_options("convert", TrainConfig)
def convert(
    data: Annotated[str, typer.Argument(help="dataset in any supported format")],
    to: Annotated[
        str,
        Opt(
            help="coco, voc, yolo, labelme, csv, cvat, labelstudio, openimages, coco-results "
            "(or folder for classification)"
        ),
    ],
    out: Annotated[Path, typer.Argument(help="output folder or file")],
    format: Annotated[str | None, Opt(help="source format (auto-detected)")] = None,
    strict: Annotated[bool, Opt(help="problems in the source are errors")] = False,
    *,
    given: dict[str, Any],
) -> None:
    """Convert a dataset between annotation formats, keeping every box and class."""
    _limit_image_pixels(given)
    trust = given.get("allow_outside_root", False)
    path, dataset = api.convert(data, to, out, format=format, strict=strict, allow_outside_root=trust)
    summary = api.summarise(dataset)
    console.print(f"{summary['num_images']} images, {summary['num_classes']} classes -> {path} ({to})")
    for issue in summary["issues"]:
        console.print(f"  {issue['path']}: {issue['problem']} ({issue['action']})", markup=False)


@app.command()
@config_options("shard", TrainConfig)
def shard(
    data: Annotated[str, typer.Argument(help="dataset in any supported format")],
    out: Annotated[Path, typer.Argument(help="new folder for the shards and their index")],
    shard_size: Annotated[str, Opt(help="images per shard (1000) or bytes per shard (64MB, 1GB)")] = "1000",
    json_: Annotated[bool, Opt("--json", help="machine-readable output")] = False,
    *,
    given: dict[str, Any],
) -> None:
    """Write a dataset as tar shards of pre-resized images (WebDataset layout), for data larger than
    the decoded-image cache: `lanner train OUT` streams them."""
    _limit_image_pixels(given)
    s = api.shard(data, out, console=console, shard_size=shard_size, **given)
    if json_:
        sys.stdout.write(json.dumps({"command": "shard", **s}) + "\n")
        return
    splits = ", ".join(f"{k} {v['images']} images in {v['shards']} shard(s)" for k, v in s["splits"].items())
    console.print(
        f"{s['task']}, {len(s['classes'])} classes -> {s['out']}: {splits}; pixels for {s['image_size']} px "
        f"training (stored {s['stored_size']} px). Train with: lanner train {s['out']}",
        highlight=False,
    )
    for issue in s["issues"]:
        console.print(f"  {issue['path']}: {issue['problem']} ({issue['action']})", markup=False)


def _runs_then(first: Path, items: list[str]) -> tuple[list[Path], list[str]]:
    """RUN [RUN...] then the rest: the items after the first run that are run directories (a checkpoint
    in checkpoints/) are more runs, up to the first that is not; it and those after are DATA/IMAGES."""
    runs = [first]
    while len(runs) - 1 < len(items) and api.is_run(items[len(runs) - 1]):
        runs.append(Path(items[len(runs) - 1]))
    return runs, items[len(runs) - 1 :]


def _one_or_all(runs: list[Path]) -> Path | list[Path]:
    return runs[0] if len(runs) == 1 else runs


def _relaunch_inference(devices: int, runs: list[Path], images: list[str] | None, options) -> None:
    """``--devices N``: N processes share the images. What all of them would refuse is refused first."""
    if devices > 1:
        api.check_inference(_one_or_all(runs), images, options)
    api.relaunch(devices, device=options.device)


@app.command(name="eval")
@config_options("eval", TrainConfig, InferenceOptions)
def eval_(
    run: Annotated[Path, typer.Argument()],
    data: Annotated[
        list[str] | None,
        typer.Argument(help="more runs (an ensemble), then another dataset (default: the first run's data)"),
    ] = None,
    split: Annotated[str | None, Opt(help="split to evaluate (default: test, else val)")] = None,
    no_report: Annotated[bool, Opt("--no-report")] = False,
    devices: InferDevicesOpt = 1,
    json_: JsonOpt = False,
    *,
    given: dict[str, Any],
) -> None:
    """Metrics of a run (or several as one ensemble) on a split: per-class report, confusion matrix, mAP."""
    _errors_go_to(run)
    options = _inference_options(given)
    runs, rest = _runs_then(run, data or [])
    if len(rest) > 1:
        raise ConfigError(
            f"eval takes one DATA after the run(s); got {', '.join(rest)} (not run directories)"
        )
    dataset = rest[0] if rest else None
    _relaunch_inference(devices, runs, None, options)
    metrics = api.evaluate(
        _one_or_all(runs), dataset, split, console, report=not no_report, **options.as_kwargs()
    )
    if json_:
        files = api.run_summary(api.outputs_dir(_one_or_all(runs)))
        written = {k: files[k] for k in ("metrics_file", "report")}
        _print_json("eval", {"run": str(run), "metrics": api.headline(metrics), **written})


@app.command()
@config_options("predict", TrainConfig, InferenceOptions)
def predict(
    run: Annotated[Path, typer.Argument()],
    images: Annotated[
        list[str], typer.Argument(help="more runs (an ensemble), then files, folders or globs")
    ],
    out: Annotated[Path | None, Opt(help="output file (default RUN/predictions/)")] = None,
    devices: InferDevicesOpt = 1,
    json_: JsonOpt = False,
    *,
    given: dict[str, Any],
) -> None:
    """Predict images with a trained run (or several as one ensemble); preprocessing and classes come from
    the checkpoints."""
    _errors_go_to(run)
    options = _inference_options(given)
    runs, images = _runs_then(run, images)
    if not images:
        raise ConfigError("predict: give IMAGES (files, folders or globs) after the run(s)")
    _relaunch_inference(devices, runs, images, options)
    rows = api.predict(
        _one_or_all(runs), images, out, topk=options.topk, console=console, **options.as_kwargs()
    )
    if json_:
        failed = sum(1 for r in rows if r.get("error"))
        written = {"out": str(out or api.outputs_dir(_one_or_all(runs)) / "predictions")}
        _print_json("predict", {"run": str(run), **written, "images": len(rows) - failed, "failed": failed})


# ------------------------------------------------------------------------- detect, then classify
@app.command()
@config_options("crops", TrainConfig)
def crops(
    data: Annotated[str, typer.Argument(help="detection dataset in any supported format")],
    out: Annotated[Path, typer.Argument(help="new folder for the crops (a classification dataset)")],
    pad: Annotated[float, Opt(help="padding around each box, a fraction of its width/height per side")] = 0.1,
    min_size: Annotated[float, Opt(help="leave out boxes whose shorter side is below this (pixels)")] = 16,
    format: Annotated[str | None, Opt(help="source format (auto-detected)")] = None,
    *,
    given: dict[str, Any],
) -> None:
    """Cut every ground-truth box into class folders (train a crop classifier on them; OUT/crops.csv maps
    each crop back to its image and box), for `predict/eval DET_RUN ... --classify CLS_RUN`."""
    _limit_image_pixels(given)
    trust = given.get("allow_outside_root", False)
    s = api.crops(data, out, pad=pad, min_size=min_size, format=format, allow_outside_root=trust)
    counts = ", ".join(f"{name} {n}" for name, n in s.per_class.items())
    console.print(f"{s.count} crops ({counts}) -> {s.out} (index: {s.out / 'crops.csv'})", highlight=False)
    left_out = [f"{s.too_small} smaller than --min-size {min_size:g} px" if s.too_small else "",
                f"{s.crowd} crowd boxes" if s.crowd else ""]  # fmt: skip
    if any(left_out):
        console.print("left out: " + ", ".join(x for x in left_out if x), highlight=False)
    for problem in s.unreadable:
        console.print(f"  skipped {problem}", markup=False)


@app.command()
def export(
    run: Annotated[Path, typer.Argument(help="run directory")],
    out: Annotated[Path | None, Opt(help="ONNX file to write (default RUN/export/model.onnx)")] = None,
    no_check: Annotated[
        bool, Opt("--no-check", help="skip running the file in ONNX Runtime against PyTorch")
    ] = False,
    format_: Annotated[
        str, Opt("--format", help="onnx, or safetensors: a folder with a model card (timm, Hugging Face)")
    ] = "onnx",
    json_: JsonOpt = False,
) -> None:
    """The run's model as one ONNX file (pre- and post-processing inside) plus a JSON spec beside it,
    or as a safetensors folder with config.json and a README.md model card."""
    _errors_go_to(run)
    info = api.export(run, out, check=not no_check, format=format_)
    if format_ == "safetensors":
        console.print(f"{info['task']} model -> {info['folder']} (model.safetensors, config.json, README.md)")
        if json_:
            _print_json("export", info)
        return
    checked = info["checked_with_onnxruntime"]
    console.print(
        f"{info['task']} model -> {info['onnx']} (spec: {info['spec']}); "
        + (f"ONNX Runtime matches PyTorch to {checked['max_abs_diff']:.1e}" if checked else "not checked")
    )
    if json_:
        _print_json("export", info)


@app.command()
def push(
    run: Annotated[Path, typer.Argument(help="run directory")],
    repo_id: Annotated[str, typer.Argument(help="Hugging Face repository, USER/NAME")],
    private: Annotated[bool, Opt(help="create the repository as private")] = False,
) -> None:
    """Upload the run's model (safetensors + config.json + model card) to the Hugging Face Hub."""
    _errors_go_to(run)
    info = api.push(run, repo_id, private=private)
    console.print(f"pushed {info['folder']} -> {info['url']}")


@app.command()
def report(
    run: Annotated[Path, typer.Argument()],
    out: Annotated[Path | None, Opt()] = None,
    json_: JsonOpt = False,
) -> None:
    """Write a self-contained HTML report of a run."""
    _errors_go_to(run)
    page = api.report(run, out)
    console.print(f"report: {page}")
    if json_:
        _print_json("report", {"run": str(run), "report": str(page)})


# ------------------------------------------------------------------------------------------- review
@app.command()
@config_options("review", TrainConfig)
def review(
    run: Annotated[Path, typer.Argument(help="run directory")],
    data: Annotated[
        str | None, typer.Argument(help="another dataset on the run's classes (default: the run's own data)")
    ] = None,
    split: Annotated[str, Opt(help="split to review")] = "train",
    folds: Annotated[
        int, Opt(help="models trained without each fold predict it; 0: the run's own model (less reliable)")
    ] = 3,
    time: Annotated[str | None, Opt(help="training time of all folds together, e.g. 10m")] = None,
    device: Annotated[str, Opt(help="auto, cpu, cuda, cuda:1")] = "auto",
    export: Annotated[
        tuple[str, Path] | None,
        Opt(
            metavar="FORMAT OUT",
            help="also write the flagged images with their labels and the suggestions marked, for an "
            "annotation tool: --export labelme|coco OUT (an earlier review newer than the checkpoint is "
            "exported as it is)",
        ),
    ] = None,
    force: Annotated[bool, Opt(help="--export: replace OUT even when it holds files")] = False,
    refresh: Annotated[bool, Opt(help="review again: reuse no finished fold and no earlier review")] = False,
    no_report: Annotated[bool, Opt("--no-report")] = False,
    *,
    given: dict[str, Any],
) -> None:
    """Likely label errors, most likely first, in RUN/review/label_issues.csv (and the report)."""
    _errors_go_to(run)
    _limit_image_pixels(given)  # the fold trainings use the run's own setting
    fmt, out = export or (None, None)
    api.review(
        run, data, split=split, folds=folds, time=time, device=device, export=fmt, out=out, force=force,
        refresh=refresh, console=console, report=not no_report,
    )  # fmt: skip


@app.command()
def models(
    task: Annotated[str, Opt()] = "classify",
    pattern: Annotated[
        str, typer.Argument(help="a pattern (resnet*), a model name or a run directory")
    ] = "*",
    image_size: Annotated[int | None, Opt(help="input size of the layer summary", min=1)] = None,
    depth: Annotated[int, Opt(help="layer summary: how many levels of blocks to list", min=1)] = 1,
) -> None:
    """List model names; for one exact name (or a run directory), its layer summary and pretrained weights."""
    if Path(pattern).is_dir():
        _print_model_summary(api.model_summary(pattern, task, image_size, depth))
        return
    names = api.list_models(task, pattern)
    for name in names:
        console.print(name, highlight=False)
    if names == [pattern]:
        _print_model_summary(api.model_summary(pattern, task, image_size, depth))
        _print_pretrained(pattern)


def _print_pretrained(name: str) -> None:
    tags, default = api.pretrained_tags(name)
    console.print(f"pretrained: {', '.join(tags) or 'none'}", highlight=False, soft_wrap=True)
    if default:
        console.print(
            f"--pretrained {'coco' if default == 'coco' else 'imagenet'} picks {default}", highlight=False
        )


def _millions(n: int) -> str:
    return f"{n / 1e6:.2f} M" if n >= 10_000 else str(n)


def _print_model_summary(s) -> None:
    table = Table(
        "block",
        "type",
        "output",
        "params",
        "trainable",
        "frozen",
        "MACs",
        title=f"{s.model}, input {s.input}",
    )
    for b in s.blocks:
        row = (b.name, b.kind, b.output, _millions(b.params), _millions(b.trainable), _millions(b.frozen))
        table.add_row(*row, f"{b.macs / 1e6:.1f} M")
    console.print(table)
    console.print(
        f"total: {s.params / 1e6:.2f} M parameters ({s.trainable / 1e6:.2f} M trainable, "
        f"{s.frozen / 1e6:.2f} M frozen); "
        f"{s.macs / 1e9:.3g} G multiply-adds = {s.flops / 1e9:.3g} GFLOPs (torch.utils.flop_counter)",
        highlight=False,
    )
    for note in s.notes:
        console.print(note, highlight=False)


@app.command()
def demo(
    run: Annotated[str | None, Opt()] = None,
    task: Annotated[str, Opt(help="classify (digits) or detect (tiled digits)")] = "classify",
    data_dir: Annotated[Path | None, Opt(help="where to write the example dataset")] = None,
) -> None:
    """The built-in example end to end: write data, train, evaluate, predict, report (no download)."""
    api.demo(task=task, run=run, data_dir=data_dir, console=console)


@app.callback(invoke_without_command=True)
def _version(version: Annotated[bool, Opt("--version")] = False) -> None:
    if version:
        console.print(f"lanner {__version__}")
        raise typer.Exit()


# ------------------------------------------------------------------------------------ error boundary
class _ErrorLog:
    """Where the traceback of an unexpected error goes: RUN/error.log once the command's run is known."""

    run_dir: Path | None = None

    @classmethod
    def path(cls) -> Path:
        run_dir = api.current_run_dir() or cls.run_dir
        if run_dir is not None and Path(run_dir).is_dir():
            return Path(run_dir) / "error.log"
        return Path("lanner-error.log").resolve()


def _errors_go_to(run_dir: str | Path | None) -> None:
    _ErrorLog.run_dir = Path(run_dir) if run_dir else None


def _write_traceback() -> Path | None:
    """Append the current exception's traceback to the error log (else a temp file); its path."""
    text = f"--- {datetime.now().isoformat(timespec='seconds')} lanner {' '.join(sys.argv[1:])}\n"
    text += traceback.format_exc()
    for path in (_ErrorLog.path(), Path(tempfile.gettempdir()) / "lanner-error.log"):
        try:
            with path.open("a") as log:
                log.write(text)
            return path
        except OSError:
            continue
    return None


def _crash(error: Exception) -> int:
    """A bug: one line naming the error and where its traceback is, exit 1."""
    log = _write_traceback()
    where = f"full traceback in {log}" if log else "no log could be written"
    message = " ".join(f"{type(error).__name__}: {error}".split())
    print(f"error: unexpected {message} (a bug in lanner; {where})", file=sys.stderr, flush=True)
    return 1


def _usage_error(error: typer.TyperException) -> int:
    """Unknown option or command, missing argument, bad value: click's usage and message, exit 2."""
    show = getattr(error, "show", None)
    if show is not None:
        show()
    else:
        print(f"Error: {error.format_message()}", file=sys.stderr)
    return error.exit_code


@contextlib.contextmanager
def _sigterm_raises():
    """SIGTERM outside training surfaces as ``Terminated`` so cleanup runs (training saves first)."""
    this_process = os.getpid()

    def raise_terminated(signum, frame) -> None:
        if os.getpid() != this_process:  # a forked worker inherited the handler: die as by default
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            os.kill(os.getpid(), signal.SIGTERM)
        raise Terminated()

    try:
        previous = signal.signal(signal.SIGTERM, raise_terminated)
    except ValueError:  # not the main thread
        previous = None
    try:
        yield
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def run_cli(argv: list[str] | None = None) -> int:
    """Run one command; its exit code (see README: Exit codes)."""
    _errors_go_to(None)
    try:
        with _sigterm_raises():
            # prog_name: the usage line and the completion variable (_LANNER_COMPLETE) say "lanner"
            # also under `python -m lanner`.
            result = app(args=argv, standalone_mode=False, prog_name="lanner")
    except typer.TyperException as e:  # typer bundles click: its ClickException derives from this
        return _usage_error(e)
    except LannerError as e:
        console.print(f"[red]error:[/] {escape(str(e))}", highlight=False, soft_wrap=True)
        return 2
    except Interrupted as e:  # the trainer saved a checkpoint; the hint says how to continue
        if e.hint:
            console.print(f"Continue with: [bold]{escape(e.hint)}[/]", highlight=False, soft_wrap=True)
        return 130
    except (typer.Abort, KeyboardInterrupt):
        console.print("aborted")
        return 130
    except Terminated:
        return 143
    except typer.Exit as e:
        return e.exit_code
    except Exception as e:
        if "lanner.api" in sys.modules and api.lost_another_process(e):
            print("error: stopped: another process of the group failed (it says why)", file=sys.stderr)
            return 1
        return _crash(e)
    return result if isinstance(result, int) else 0


def main(argv: list[str] | None = None) -> None:
    """The console script: 0 ok, 2 usage/config/data error, 130 Ctrl-C, 143 SIGTERM, 1 a bug."""
    sys.exit(run_cli(argv))


if __name__ == "__main__":
    main()
