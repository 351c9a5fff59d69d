"""The `lanner` command: a thin layer that turns options into API calls and errors into clear lines."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from lanner import __version__, api
from lanner.config import apply_overrides, load_config, make_config
from lanner.engine.trainer import Interrupted
from lanner.errors import LannerError

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    rich_markup_mode=None,
    pretty_exceptions_show_locals=False,
    help="Train, evaluate and share image classifiers and object detectors on your own images.",
)
console = Console()

Opt = typer.Option


def _config_from_options(config_file: Path | None, sets: list[str] | None, **options: Any):
    """Config file < explicit options < --set key=value, then validated as one TrainConfig."""
    values = load_config(config_file).model_dump(mode="json", exclude_unset=True) if config_file else {}
    schedule = dict(values.get("schedule") or {})
    for key in ("schedule", "warmup"):
        val = options.pop(key, None)
        if val is not None:
            schedule["name" if key == "schedule" else "warmup_epochs"] = val
    if schedule:
        values["schedule"] = schedule
    values.update({k: v for k, v in options.items() if v is not None})
    values = apply_overrides(values, sets or [])
    return make_config(values, str(config_file or "options"))


def _split_list(text: str | None) -> list[str] | None:
    return [c.strip() for c in text.split(",") if c.strip()] if text else None


def _rename_map(items: list[str] | None) -> dict[str, str] | None:
    if not items:
        return None
    pairs = [i.split("=", 1) for i in items]
    if any(len(p) != 2 for p in pairs):
        raise typer.BadParameter("--rename takes OLD=NEW")
    return {a.strip(): b.strip() for a, b in pairs}


DevicesOpt = Annotated[
    int, Opt(help="processes on this machine, one per GPU (or CPU processes); >1 starts them with torchrun")
]


@app.command()
def train(
    data: Annotated[
        str, typer.Argument(help="dataset folder or annotation file (any supported format)")
    ] = "",
    task: Annotated[str | None, Opt(help="classify or detect (inferred from the data)")] = None,
    config: Annotated[Path | None, Opt(help="YAML config (options given here override it)")] = None,
    run: Annotated[str | None, Opt(help="run directory (default runs/<task>-<time>)")] = None,
    model: Annotated[str | None, Opt(help="model name (any timm model for classification)")] = None,
    pretrained: Annotated[str | None, Opt(help="local weights file or a lanner run to start from")] = None,
    image_size: Annotated[int | None, Opt(help="input size in pixels")] = None,
    batch_size: Annotated[int | None, Opt()] = None,
    epochs: Annotated[int | None, Opt()] = None,
    time: Annotated[str | None, Opt(help="wall-clock budget instead of epochs, e.g. 15m")] = None,
    optimizer: Annotated[str | None, Opt(help="adamw, adam or sgd")] = None,
    lr: Annotated[str | None, Opt(help="peak learning rate, or auto (an LR range test picks it)")] = None,
    weight_decay: Annotated[float | None, Opt()] = None,
    schedule: Annotated[
        str | None,
        Opt(help="constant, step, multistep, exponential, time, polynomial, linear, cosine, onecycle"),
    ] = None,
    warmup: Annotated[float | None, Opt(help="warmup epochs")] = None,
    augment: Annotated[str | None, Opt(help="none, light, default, strong")] = None,
    hflip: Annotated[bool | None, Opt("--hflip/--no-hflip", help="random horizontal flips")] = None,
    balance: Annotated[str | None, Opt(help="none, oversample or weighted (imbalanced classes)")] = None,
    classes: Annotated[str | None, Opt(help="keep only these classes, comma-separated")] = None,
    rename: Annotated[
        list[str] | None, Opt(help="OLD=NEW class rename (repeatable; merges when equal)")
    ] = None,
    freeze_epochs: Annotated[int | None, Opt(help="train only the head for N epochs first")] = None,
    patience: Annotated[int | None, Opt(help="early stopping patience in epochs")] = None,
    monitor: Annotated[
        str | None, Opt(help="metric for best checkpoint (val_acc, val_loss, val_map)")
    ] = None,
    seed: Annotated[int | None, Opt()] = None,
    device: Annotated[str | None, Opt(help="auto, cpu, cuda, cuda:1")] = None,
    precision: Annotated[str | None, Opt(help="auto, 32, bf16, 16-mixed")] = None,
    tile: Annotated[int | None, Opt(help="detection: tile size in pixels for huge images")] = None,
    overlap: Annotated[float | None, Opt(help="tile overlap: fraction (<1) or pixels")] = None,
    min_visibility: Annotated[float | None, Opt(help="tiles: drop boxes less visible than this")] = None,
    empty_tile_ratio: Annotated[float | None, Opt(help="tiles: empty tiles per tile with objects")] = None,
    set_: Annotated[list[str] | None, Opt("--set", help="dotted override, e.g. schedule.gamma=0.5")] = None,
    track: Annotated[str | None, Opt(help="mirror the run into an experiment tracker: mlflow")] = None,
    tracking_uri: Annotated[str | None, Opt(help="tracking server (default: MLFLOW_TRACKING_URI)")] = None,
    experiment: Annotated[str | None, Opt(help="experiment name in the tracker (default lanner)")] = None,
    dry_run: Annotated[bool, Opt(help="print and plot the LR schedule, then stop")] = False,
    devices: DevicesOpt = 1,
    no_eval: Annotated[
        bool, Opt("--no-eval", help="skip the evaluation (and report) after training")
    ] = False,
) -> None:
    """Train a classifier or detector; everything goes to one run directory."""
    cfg = _config_from_options(
        config,
        set_,
        data=data or None,
        task=task,
        run=run,
        model=model,
        pretrained=pretrained,
        image_size=image_size,
        batch_size=batch_size,
        epochs=epochs,
        time=time,
        optimizer=optimizer,
        lr=lr,
        weight_decay=weight_decay,
        schedule=schedule,
        warmup=warmup,
        augment=augment,
        hflip=hflip,
        balance=balance,
        classes=_split_list(classes),
        rename=_rename_map(rename),
        freeze_epochs=freeze_epochs,
        patience=patience,
        monitor=monitor,
        seed=seed,
        device=device,
        precision=precision,
        tile=tile,
        overlap=overlap,
        min_visibility=min_visibility,
        empty_tile_ratio=empty_tile_ratio,
        track=track,
        tracking_uri=tracking_uri,
        experiment=experiment,
    )
    if not cfg.data:
        raise typer.BadParameter("give DATA (or `data:` in --config)")
    if dry_run:
        _show_schedule(cfg, None, api.count_images(cfg.data, cfg.format), "schedule.png")
        return
    _launch(devices)
    api.train(cfg, console, evaluate_after=not no_eval)


def _launch(devices: int) -> None:
    """With --devices N > 1, become torchrun starting N copies of this command (unless one of them)."""
    if devices > 1 and "WORLD_SIZE" not in os.environ:
        from lanner.engine.distributed import relaunch_under_torchrun

        relaunch_under_torchrun(devices)


@app.command(name="lr-find")
def lr_find(
    data: Annotated[str, typer.Argument(help="dataset folder or annotation file")] = "",
    task: Annotated[str | None, Opt(help="classify or detect (inferred from the data)")] = None,
    config: Annotated[Path | None, Opt(help="YAML config (options given here override it)")] = None,
    run: Annotated[str | None, Opt(help="output directory (default runs/lr-find-<task>-<time>)")] = None,
    model: Annotated[str | None, Opt()] = None,
    pretrained: Annotated[str | None, Opt(help="local weights file or a lanner run to start from")] = None,
    image_size: Annotated[int | None, Opt()] = None,
    batch_size: Annotated[int | None, Opt()] = None,
    optimizer: Annotated[str | None, Opt(help="adamw, adam or sgd")] = None,
    weight_decay: Annotated[float | None, Opt()] = None,
    device: Annotated[str | None, Opt(help="auto, cpu, cuda, cuda:1")] = None,
    precision: Annotated[str | None, Opt(help="auto, 32, bf16, 16-mixed")] = None,
    tile: Annotated[int | None, Opt(help="detection: tile size in pixels for huge images")] = None,
    overlap: Annotated[float | None, Opt(help="tile overlap: fraction (<1) or pixels")] = None,
    start_lr: Annotated[float, Opt(help="first LR of the range")] = 1e-7,
    end_lr: Annotated[float, Opt(help="last LR of the range")] = 10.0,
    steps: Annotated[int, Opt(help="training steps over the range (stops early on divergence)")] = 100,
    set_: Annotated[list[str] | None, Opt("--set", help="dotted override, e.g. augment=none")] = None,
) -> None:
    """LR range test: train briefly with a rising LR, plot the loss, suggest the LR to train with."""
    # The parameters named like TrainConfig fields become the config (the rest shape the test).
    options = {
        k: v
        for k, v in locals().items()
        if k not in ("data", "config", "set_", "start_lr", "end_lr", "steps")
    }
    cfg = _config_from_options(config, set_, data=data or None, **options)
    if not cfg.data:
        raise typer.BadParameter("give DATA (or `data:` in --config)")
    api.lr_find(cfg, console, start_lr=start_lr, end_lr=end_lr, steps=steps)


@app.command()
def resume(
    run: Annotated[Path, typer.Argument(help="run directory")],
    lr: Annotated[float | None, Opt(help="new learning rate from now on")] = None,
    epochs: Annotated[int | None, Opt(help="new total number of epochs")] = None,
    schedule: Annotated[str | None, Opt(help="new schedule from now on")] = None,
    patience: Annotated[int | None, Opt()] = None,
    monitor: Annotated[str | None, Opt()] = None,
    no_eval: Annotated[bool, Opt("--no-eval")] = False,
    devices: DevicesOpt = 1,
) -> None:
    """Continue a run; changes are recorded as a new segment of the same run."""
    _launch(devices)
    api.resume(
        run,
        console,
        lr=lr,
        epochs=epochs,
        schedule={"name": schedule} if schedule else None,
        patience=patience,
        monitor=monitor,
        evaluate_after=not no_eval,
    )


def _show_schedule(cfg, steps_per_epoch, num_images, out) -> None:
    rows, path = api.schedule_preview(cfg, steps_per_epoch, out, num_images)
    table = Table("epoch", "LR first step", "LR last step", title=f"{cfg.schedule.name} schedule")
    for epoch, first, last in rows:
        table.add_row(str(epoch), f"{first:.6g}", f"{last:.6g}")
    console.print(table)
    console.print(f"plot: {path}")


@app.command()
def schedule(
    data: Annotated[str | None, typer.Argument(help="dataset, to count steps per epoch")] = None,
    config: Annotated[Path | None, Opt()] = None,
    steps_per_epoch: Annotated[int | None, Opt(help="instead of DATA")] = None,
    epochs: Annotated[int | None, Opt()] = None,
    lr: Annotated[float | None, Opt()] = None,
    schedule: Annotated[str | None, Opt("--schedule", "--name")] = None,
    warmup: Annotated[float | None, Opt()] = None,
    batch_size: Annotated[int | None, Opt()] = None,
    set_: Annotated[list[str] | None, Opt("--set")] = None,
    out: Annotated[Path, Opt(help="plot file")] = Path("schedule.png"),
) -> None:
    """Print the LR schedule per epoch and plot it, before any training."""
    cfg = _config_from_options(
        config, set_, data=data, epochs=epochs, lr=lr, schedule=schedule, warmup=warmup, batch_size=batch_size
    )
    n = api.count_images(cfg.data, cfg.format) if cfg.data and steps_per_epoch is None else None
    _show_schedule(cfg, steps_per_epoch or (None if n else 100), n, out)


@app.command()
def check(
    data: Annotated[str, typer.Argument()],
    format: Annotated[str | None, Opt(help="skip auto-detection")] = None,
    strict: Annotated[bool, Opt(help="problems are errors")] = False,
    json_: Annotated[bool, Opt("--json", help="machine-readable output")] = False,
) -> None:
    """Read a dataset, verify every image, summarise it and list every problem with its file."""
    summary = api.check(data, format, strict)
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
    console.print(f"problems: {s['num_issues']}")
    for issue in s["issues"]:
        console.print(f"  {issue['path']}: {issue['problem']} ({issue['action']})", markup=False)


@app.command()
def convert(
    data: Annotated[str, typer.Argument(help="dataset in any supported format")],
    to: Annotated[str, Opt(help="coco, voc, yolo, labelme, csv (or folder for classification)")],
    out: Annotated[Path, typer.Argument(help="output folder or file")],
    format: Annotated[str | None, Opt(help="source format (auto-detected)")] = None,
    strict: Annotated[bool, Opt(help="problems in the source are errors")] = False,
) -> None:
    """Convert a dataset between annotation formats, keeping every box and class."""
    from lanner.data.check import summarise

    path, dataset = api.convert(data, to, out, format=format, strict=strict)
    summary = summarise(dataset, [])
    console.print(f"{summary['num_images']} images, {summary['num_classes']} classes -> {path} ({to})")
    for issue in summary["issues"]:
        console.print(f"  {issue['path']}: {issue['problem']} ({issue['action']})", markup=False)


# Tiled-inference options shared by `eval` and `predict` (a detection run's own tiling is the default).
TileOpt = Annotated[int | None, Opt(help="detection: tile size (default: the run's own tiling)")]
OverlapOpt = Annotated[float | None, Opt(help="detection: tile overlap, fraction or pixels")]
NoTileOpt = Annotated[bool, Opt("--no-tile", help="detection: run on whole images (downscaled), no tiling")]
MergeOpt = Annotated[str | None, Opt(help="detection: merge tiles with nms, nmm or wbf")]
MergeThresholdOpt = Annotated[float | None, Opt(help="detection: overlap above which boxes merge")]
DeviceOpt = Annotated[str, Opt(help="auto (CUDA when available), cpu, cuda, cuda:N")]
InferencePrecisionOpt = Annotated[str, Opt(help="auto (bf16 on a GPU, 32 on a CPU), 32, bf16, 16-mixed")]
FullImagePassOpt = Annotated[
    bool | None,
    Opt("--full-image-pass/--no-full-image-pass", help="detection: add a downscaled whole-image pass"),
]


@app.command(name="eval")
def eval_(
    run: Annotated[Path, typer.Argument()],
    data: Annotated[str | None, typer.Argument(help="another dataset (default: the run's own data)")] = None,
    split: Annotated[str | None, Opt(help="split to evaluate (default: test, else val)")] = None,
    no_report: Annotated[bool, Opt("--no-report")] = False,
    tile: TileOpt = None,
    overlap: OverlapOpt = None,
    no_tile: NoTileOpt = False,
    merge: MergeOpt = None,
    merge_threshold: MergeThresholdOpt = None,
    full_image_pass: FullImagePassOpt = None,
    device: DeviceOpt = "auto",
    precision: InferencePrecisionOpt = "auto",
) -> None:
    """Metrics of a run on a split: per-class report, confusion matrix, mAP for detectors."""
    api.evaluate(
        run,
        data,
        split,
        console,
        report=not no_report,
        device=device,
        precision=precision,
        **_tiling_options(tile, overlap, no_tile, merge, merge_threshold, full_image_pass),
    )


def _tiling_options(tile, overlap, no_tile, merge, merge_threshold, full_image_pass) -> dict:
    options = {
        "tile": 0 if no_tile else tile,
        "overlap": overlap,
        "merge": merge,
        "merge_threshold": merge_threshold,
        "full_image_pass": full_image_pass,
    }
    return {k: v for k, v in options.items() if v is not None}


@app.command()
def predict(
    run: Annotated[Path, typer.Argument()],
    images: Annotated[list[str], typer.Argument(help="files, folders or globs")],
    out: Annotated[Path | None, Opt(help="output file (default RUN/predictions/)")] = None,
    topk: Annotated[int, Opt()] = 5,
    format: Annotated[str | None, Opt(help="detection output: coco, csv, labelme, yolo")] = None,
    render: Annotated[Path | None, Opt(help="detection: draw boxes on JPEG copies here")] = None,
    tile: TileOpt = None,
    overlap: OverlapOpt = None,
    no_tile: NoTileOpt = False,
    merge: MergeOpt = None,
    merge_threshold: MergeThresholdOpt = None,
    full_image_pass: FullImagePassOpt = None,
    device: DeviceOpt = "auto",
    precision: InferencePrecisionOpt = "auto",
) -> None:
    """Predict images with a trained run; preprocessing and classes come from the checkpoint."""
    detection = {k: v for k, v in {"format": format, "render": render}.items() if v is not None}
    detection |= _tiling_options(tile, overlap, no_tile, merge, merge_threshold, full_image_pass)
    api.predict(run, images, out, topk=topk, console=console, device=device, precision=precision, **detection)


@app.command()
def export(
    run: Annotated[Path, typer.Argument(help="run directory")],
    out: Annotated[Path | None, Opt(help="ONNX file to write (default RUN/export/model.onnx)")] = None,
    no_check: Annotated[
        bool, Opt("--no-check", help="skip running the file in ONNX Runtime against PyTorch")
    ] = False,
) -> None:
    """The run's model as one ONNX file (pre- and post-processing inside) plus a JSON spec beside it."""
    from lanner.export import export_run

    info = export_run(run, out, check=not no_check)
    checked = info["checked_with_onnxruntime"]
    console.print(
        f"{info['task']} model -> {info['onnx']} (spec: {info['spec']}); "
        + (f"ONNX Runtime matches PyTorch to {checked['max_abs_diff']:.1e}" if checked else "not checked")
    )


@app.command()
def report(
    run: Annotated[Path, typer.Argument()],
    out: Annotated[Path | None, Opt()] = None,
) -> None:
    """Write a self-contained HTML report of a run."""
    console.print(f"report: {api.report(run, out)}")


@app.command()
def models(
    task: Annotated[str, Opt()] = "classify",
    pattern: Annotated[str, typer.Argument()] = "*",
) -> None:
    """List model names."""
    from lanner.models import list_models

    for name in list_models(task, pattern):
        console.print(name, highlight=False)


@app.command()
def demo(
    run: Annotated[str | None, Opt()] = None,
    task: Annotated[str, Opt(help="classify (digits) or detect (tiled digits)")] = "classify",
    data_dir: Annotated[Path | None, Opt(help="where to write the example dataset")] = None,
) -> None:
    """The built-in example end to end: write data, train, evaluate, predict, report (no download)."""
    from lanner.demo import run_demo

    run_demo(task=task, run=run, data_dir=data_dir, console=console)


@app.callback(invoke_without_command=True)
def _version(version: Annotated[bool, Opt("--version")] = False) -> None:
    if version:
        console.print(f"lanner {__version__}")
        raise typer.Exit()


def main() -> None:
    try:
        app(standalone_mode=False)
    except LannerError as e:
        console.print(f"[red]error:[/] {e}", highlight=False)
        sys.exit(2)
    except Interrupted:
        sys.exit(130)
    except (typer.Abort, KeyboardInterrupt):
        console.print("aborted")
        sys.exit(130)
    except (typer.BadParameter, typer.Exit) as e:
        if isinstance(e, typer.Exit):
            sys.exit(e.exit_code)
        console.print(f"[red]error:[/] {e}")
        sys.exit(2)
    except Exception as e:  # click's usage errors
        import click

        if isinstance(e, click.ClickException):
            e.show()
            sys.exit(e.exit_code)
        raise


if __name__ == "__main__":
    main()
