"""The Python face of lanner: every CLI verb is one of these functions.

Each verb is a few lines: the engine runs training sessions, the task plug-ins (:mod:`lanner.tasks`)
do what differs between classification and detection, and this module connects the two.
"""

from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console

from lanner import models, share
from lanner._io import write_text
from lanner.config import InferenceOptions, TrainConfig, make_config
from lanner.data.check import check_dataset
from lanner.data.check import summarise as summarise_dataset
from lanner.data.convert import convert_dataset
from lanner.data.formats import read_dataset
from lanner.data.images import set_max_image_pixels as set_image_pixel_limit
from lanner.data.shard_index import is_shard_folder, read_index
from lanner.demo import run_demo
from lanner.engine import distributed, lr_auto
from lanner.engine import resume as resuming
from lanner.engine import session as sessions
from lanner.engine.checkpoint import find_checkpoint
from lanner.engine.history import read_history
from lanner.engine.lr_find import exponential_lrs
from lanner.engine.schedules import plot_schedule, schedule_table
from lanner.engine.setup import base_lr, build_optimizer, first_segment
from lanner.engine.tracking import check_tracker
from lanner.engine.trainer import TrainState
from lanner.errors import ConfigError
from lanner.export import export_run
from lanner.models.devices import choose_device
from lanner.models.pretrained import pretrained_tags as pretrained_weights
from lanner.predict.inputs import expand_inputs
from lanner.report import build_report
from lanner.rundir import RunDir
from lanner.tasks import get_task
from lanner.tasks.classify.probe import run_probe
from lanner.tasks.ensemble import ENSEMBLE_DIR, load_ensemble
from lanner.tasks.loading import describe_inference, load_for_inference
from lanner.tasks.review import ReviewSettings, review_run
from lanner.tasks.sharding import ShardOptions, shard_dataset
from lanner.tasks.summary import summarise_name, summarise_run
from lanner.tasks.two_stage.crops import CropSummary, write_crops
from lanner.tasks.two_stage.pipeline import load_two_stage

RESUMABLE = resuming.RESUMABLE


def _console(console: Console | None) -> Console:
    return console or Console()


def _prepare(config: TrainConfig, run: RunDir, device, console: Console, fresh: bool):
    """The task plug-in's side of a training session (data, cache, model)."""
    return get_task(config.task).prepare(config, run, device, console, fresh)


def _check_names(config: TrainConfig) -> None:
    """A task or tracker lanner does not know fails here, before any file is written."""
    if config.task is not None:
        get_task(config.task)
    if config.track is not None:
        check_tracker(config.track)


def _train_config(config: TrainConfig | str | Path, settings: dict) -> TrainConfig:
    """A TrainConfig from a config or DATA, with keyword settings on top (validated as options are)."""
    if isinstance(config, TrainConfig) and not settings:
        return config
    base = config.model_dump(mode="json") if isinstance(config, TrainConfig) else {"data": str(config)}
    return make_config({**base, **settings}, "keywords")


def _after_training(s: sessions.Session, evaluate_after: bool):
    """Process 0's evaluation of the finished run. It runs alone: the training group is gone by then
    (its other processes have stopped), though the environment still names it."""
    alone = _Place("auto", distributed.WHOLE, s.console)
    return lambda: (
        _evaluate_at(alone, s.run_dir, None, None, True, InferenceOptions()) if evaluate_after else None
    )


# ------------------------------------------------------------------------------------------ train
def train(
    config: TrainConfig | str | Path, console: Console | None = None, *, evaluate_after: bool = True,
    **settings,
) -> Path:  # fmt: skip
    """Train a new run; returns its directory (printed at start and end). ``config`` is a TrainConfig,
    or DATA with the settings as keywords: ``train("data/pets", epochs=5, model="resnet18")``."""
    config = _train_config(config, settings)
    _check_names(config)
    s = sessions.set_up(config, _console(console), _prepare)
    # The range test's seconds start the run's wall clock: a --time budget pays for them too.
    range_test_s = lr_auto.choose_lr(s) if s.config.lr == "auto" else 0.0
    spe = s.prepared.task.steps_per_epoch()
    state = TrainState(
        total_epochs=s.config.epochs,
        segments=[first_segment(s.config, spe)],
        monitor=s.config.monitor or s.prepared.task.monitor,
        patience=s.config.patience,
        wall_seconds=range_test_s,
    )
    optimizer = build_optimizer(s.prepared.model, s.config, base_lr(s.config))
    for note in s.prepared.notes:
        s.console.print(note)
    sessions.print_plan(s, state)
    callbacks = sessions.callbacks_for(s)
    sessions.plot_plan(s, state)
    return sessions.fit(s, optimizer, state, callbacks, _after_training(s, evaluate_after))


def resume(
    run: str | Path, console: Console | None = None, *, evaluate_after: bool = True, unfreeze: bool = False,
    **changes,
) -> Path:  # fmt: skip
    """Continue a run from its last checkpoint, optionally with new settings (a new segment);
    ``unfreeze``: everything trains from here on (a run trained with ``--freeze``)."""
    changes = {k: v for k, v in changes.items() if v is not None}
    ckpt, old, config = resuming.resumed_config(RunDir(run), changes, unfreeze)
    s = sessions.start(config, _console(console), Path(run), _prepare)
    # With --ema the checkpoint's model is the average; the weights that train are kept beside it.
    averaged = "train_weights" in ckpt
    s.prepared.model.load_state_dict(ckpt["train_weights" if averaged else "state_dict"])
    optimizer = build_optimizer(s.prepared.model, config, base_lr(config))
    optimizer.load_state_dict(ckpt["optimizer"])
    spe = s.prepared.task.steps_per_epoch()
    state = resuming.restore_state(ckpt, s.run_dir, spe)
    diff = resuming.changed(old, config, [*changes, *resuming.UNFROZEN])
    if diff:
        resuming.add_segment(state, config, diff, spe)
    if s.dist.is_main:
        write_text(s.run.config, config.to_yaml())
    _print_resume(s, state, diff)
    sessions.print_plan(s, state)
    callbacks = sessions.callbacks_for(s, len(state.segments) - 1, diff)
    sessions.plot_plan(s, state)
    ema_weights = ckpt["state_dict"] if averaged else None
    return sessions.fit(s, optimizer, state, callbacks, _after_training(s, evaluate_after), ema_weights)


def check_resume(run: str | Path, *, unfreeze: bool = False, **changes) -> None:
    """What :func:`resume` would refuse before reading any data (unknown changes, an LR decayed to
    nothing), refused now: before ``--devices N`` starts its processes."""
    changes = {k: v for k, v in changes.items() if v is not None}
    ckpt, old, config = resuming.resumed_config(RunDir(run), changes, unfreeze)
    state = TrainState.from_dict(ckpt["train_state"])
    diff = resuming.changed(old, config, [*changes, *resuming.UNFROZEN])
    if diff:
        resuming.add_segment(state, config, diff, state.segments[-1].steps_per_epoch)


def _print_resume(s: sessions.Session, state: TrainState, diff: dict) -> None:
    s.console.print(
        f"resuming [bold]{s.run_dir}[/] at epoch {state.epoch + 1}"
        + (f", step {state.step_in_epoch}" if state.step_in_epoch else "")
        + (f"; changes: {resuming.describe_changes(diff)}" if diff else "; no changes")
    )


def lr_find(
    config: TrainConfig, console: Console | None = None, *, start_lr: float = 1e-7, end_lr: float = 10.0,
    steps: int = 100,
) -> dict:  # fmt: skip
    """LR range test on the run's data and model (:mod:`lanner.engine.lr_find`); nothing is kept
    but ``lr_find.csv``, ``lr_find.json`` and ``lr_find.png`` in the (new) run directory.

    The range test is one process's work. Started as several (under torchrun or srun), process 0 runs
    it alone, exactly as one process would, and the others stop at once, writing nothing and
    returning {}."""
    exponential_lrs(start_lr, end_lr, steps)  # bad bounds fail before any data is read
    _check_names(config)
    group = distributed.from_environment()
    if not group.is_main:
        return {}
    s = sessions.set_up(config, _console(console), _prepare, kind="lr-find-", alone=True)
    if group.enabled:
        others = group.world - 1
        s.console.print(f"the LR range test runs in process 0 alone (the other {others} stopped)")
    for note in s.prepared.notes:
        s.console.print(note)
    try:
        result, summary = lr_auto.run_range_test(s, s.prepared.model, start_lr, end_lr, steps)
        lr_auto.print_lr_find(s.console, s.config, result, s.run)
    finally:
        sessions.release(s)
    return summary


# ------------------------------------------------------------------------------------- schedule
def schedule_preview(
    config: TrainConfig,
    steps_per_epoch: int | None = None,
    out: str | Path | None = None,
    num_images: int | None = None,
) -> tuple[list[tuple[int, float, float]], Path]:
    """The LR per epoch and a plot of it, before any training (no data needed with steps_per_epoch)."""
    if steps_per_epoch is None:
        if num_images is None:
            raise ConfigError("give steps per epoch, the number of images, or DATA to count them")
        steps_per_epoch = -(-num_images // (config.batch_size or 32))
    seg = first_segment(config, steps_per_epoch)
    out = Path(out or "schedule.png")
    plot_schedule([seg], config.epochs * steps_per_epoch, steps_per_epoch, out)
    return schedule_table([seg], config.epochs, steps_per_epoch), out


def probe(config: TrainConfig, console: Console | None = None, *, report: bool = True) -> Path:
    """A linear probe of ``config.pretrained``'s features (classification): fitted with scikit-learn,
    written as a run (checkpoint = backbone + the probe as head) and evaluated on val (and test)."""
    console = _console(console)
    run = run_probe(config, console)
    dataset = read_dataset(config.data, config.format, allow_outside_root=config.allow_outside_root)
    split = "val,test" if "test" in {r.split for r in dataset.records} else "val"
    evaluate(run, split=split, console=console, report=report, device=config.device)
    return run


def count_images(data: str, format: str | None = None, allow_outside_root: bool = False) -> int:
    if is_shard_folder(data):
        return read_index(data).count("train")
    dataset = read_dataset(data, format, allow_outside_root=allow_outside_root)
    return sum(1 for r in dataset.records if r.split in (None, "train"))


# ---------------------------------------------------------------------------------- eval/predict
def _runs(run: str | Path | Sequence[str | Path]) -> list[str | Path]:
    return [run] if isinstance(run, str | Path) else list(run)


def is_run(path: str | Path) -> bool:
    """Whether ``path`` is a run directory holding a checkpoint (how the CLI tells runs from data)."""
    return RunDir(path).holds_run()


@dataclass(frozen=True)
class _Place:
    """Where this process's eval or predict runs: its device, its part of the images, its console."""

    device: str
    part: distributed.Part
    console: Console

    @property
    def is_main(self) -> bool:
        return self.part.is_main


@contextlib.contextmanager
def _inference_place(options: InferenceOptions, console: Console | None):
    """This process's place, in its group while the block runs when it is one of several (``--devices
    N``, torchrun, srun): then it infers on its part of the images, and process 0 alone speaks,
    scores and writes."""
    with distributed.joined(choose_device(options.device)) as (dist, device):
        if dist.enabled and options.classify is not None:
            raise ConfigError(_ONE_PROCESS_TWO_STAGE)
        quiet = Console(quiet=True)  # one process speaks
        yield _Place(str(device), distributed.Part(dist), _console(console) if dist.is_main else quiet)


_ONE_PROCESS_TWO_STAGE = "--classify (detect, then classify) runs in one process: leave out --devices"


def evaluate(
    run: str | Path | Sequence[str | Path],
    data: str | None = None,
    split: str | None = None,
    console: Console | None = None,
    report: bool = True,
    options: InferenceOptions | None = None,
    **option_values,
) -> dict:
    """Metrics of a run on a split (default test, else val; ``val,test`` for several) of its own data
    or of ``data``. ``options`` (or its fields as keywords: device, precision, tile, overlap, ...) say
    how the model runs; see :class:`~lanner.config.InferenceOptions`. Several runs are evaluated as
    one ensemble (``options.weights``), written to RUN1/ensemble (:mod:`lanner.tasks.ensemble`).
    Under several processes each infers on its part of the images; process 0 returns the metrics
    (those of one process) and writes everything, the others return {}."""
    options = options or InferenceOptions(**option_values)
    with _inference_place(options, console) as place:
        return _evaluate_at(place, run, data, split, report, options)


def _evaluate_at(place: _Place, run, data, split, report: bool, options: InferenceOptions) -> dict:
    if options.classify is not None:
        return _evaluate_two_stage(run, data, split, place.console, report, options)
    if len(_runs(run)) > 1:
        ensemble = _ensemble(run, options, place)
        return ensemble.task.evaluate_ensemble(ensemble, data, split, options, place.console)
    loaded = load_for_inference(run, place.device, options.precision, part=place.part)
    place.console.print(describe_inference(loaded))
    metrics = loaded.task.evaluate(loaded, data, split, options, place.console)
    if report and place.is_main:  # the run the checkpoint belongs to (RUN or RUN/checkpoints/x.ckpt)
        place.console.print(f"report: {build_report(loaded.run.path)}")
    return metrics


def _ensemble(run, options: InferenceOptions, place: _Place):
    ensemble = load_ensemble(_runs(run), options.weights, place.device, options.precision, place.part)
    place.console.print(describe_inference(ensemble.members[0]))
    return ensemble


def predict(
    run: str | Path | Sequence[str | Path],
    inputs: list[str],
    out: str | Path | None = None,
    console: Console | None = None,
    options: InferenceOptions | None = None,
    **option_values,
) -> list[dict]:
    """Predictions for files, folders and globs; ``options`` as for :func:`evaluate` (plus topk,
    format, render); several runs predict as one ensemble (``options.weights``). Under several
    processes process 0 returns every image's row and writes the files, the others return []."""
    options = options or InferenceOptions(**option_values)
    out = Path(out) if out else None
    with _inference_place(options, console) as place:
        console = place.console
        if options.classify is not None:
            pipeline = load_two_stage(_one_detector(run), options.classify, options.device, options.precision)
            console.print(describe_inference(pipeline.detector))
            return pipeline.task.predict(pipeline, inputs, out, options, console)
        if len(_runs(run)) > 1:
            ensemble = _ensemble(run, options, place)
            return ensemble.task.predict_ensemble(ensemble, inputs, out, options, console)
        loaded = load_for_inference(run, place.device, options.precision, part=place.part)
        console.print(describe_inference(loaded))
        return loaded.task.predict(loaded, inputs, out, options, console)


def check_inference(
    run: str | Path | Sequence[str | Path],
    inputs: list[str] | None = None,
    options: InferenceOptions | None = None,
) -> None:
    """What eval or predict with several processes would refuse in every one of them, refused now:
    before ``--devices N`` starts them (a run without a checkpoint, IMAGES matching nothing)."""
    for one in _runs(run):
        find_checkpoint(one)
    if options is not None and options.classify is not None:
        raise ConfigError(_ONE_PROCESS_TWO_STAGE)
    if inputs is not None:
        expand_inputs(inputs)


# ------------------------------------------------------------------------- detect, then classify
def _one_detector(run: str | Path | Sequence[str | Path]) -> str | Path:
    runs = _runs(run)
    if len(runs) > 1:
        given = ", ".join(map(str, runs))
        raise ConfigError(f"--classify takes one detector run; got {len(runs)} runs ({given})")
    return runs[0]


def _evaluate_two_stage(run, data, split, console: Console, report: bool, options: InferenceOptions) -> dict:
    """Detector + crop classifier scored as one (DET_RUN/two_stage), beside the detector alone."""
    pipeline = load_two_stage(_one_detector(run), options.classify, options.device, options.precision)
    console.print(describe_inference(pipeline.detector))
    metrics = pipeline.task.evaluate(pipeline, data, split, options, console)
    if report:
        console.print(f"report: {build_report(pipeline.run.path)}")
    return metrics


def crops(
    data: str, out: str | Path, *, pad: float = 0.1, min_size: float = 16, format: str | None = None,
    allow_outside_root: bool = False,
) -> CropSummary:  # fmt: skip
    """Every ground-truth box of a detection dataset as a PNG crop in class folders (a classification
    dataset) plus OUT/crops.csv back to the source image and box; see :mod:`lanner.tasks.two_stage.crops`."""
    return write_crops(data, out, pad, min_size, format, allow_outside_root)


def check(
    data: str, format: str | None = None, strict: bool = False, allow_outside_root: bool = False
) -> dict:
    return check_dataset(data, format, strict=strict, allow_outside_root=allow_outside_root)


def convert(
    data: str, to: str, out: str | Path, format: str | None = None, strict: bool = False,
    allow_outside_root: bool = False,
):  # fmt: skip
    """Convert ``data`` to another format; returns (output path, the dataset as read, with its issues)."""
    dataset = read_dataset(data, format, strict=strict, allow_outside_root=allow_outside_root)
    return convert_dataset(dataset, to, out, data), dataset


def shard(
    data: str, out: str | Path, console: Console | None = None, options: ShardOptions | None = None,
    **option_values,
) -> dict:  # fmt: skip
    """Write ``data`` (any format) as tar shards of pre-resized images that ``train(out)`` streams;
    ``options`` (or its fields as keywords: image_size, shard_size, val_fraction, seed, workers, ...)
    see :class:`~lanner.tasks.sharding.ShardOptions`. Returns what was written."""
    index, issues = shard_dataset(data, out, options or ShardOptions(**option_values), _console(console))
    return {
        "out": str(out),
        "task": index.task,
        "classes": index.classes,
        "image_size": index.image_size,
        "stored_size": index.stored_size,
        "splits": {k: {"images": index.count(k), "shards": len(v)} for k, v in index.splits.items()},
        "issues": [{"path": i.path, "problem": i.problem, "action": i.action} for i in issues],
    }


def report(run: str | Path, out: str | Path | None = None) -> Path:
    return build_report(Path(run), out)


# ------------------------------------------------------------------------------------------ review
def review(
    run: str | Path, data: str | None = None, *, console: Console | None = None, report: bool = True,
    **options,
) -> dict:  # fmt: skip
    """Likely label errors in a split of a run's data (or of ``data``), most likely first, in
    RUN/review/label_issues.csv (:mod:`lanner.tasks.review`). ``options`` are
    :class:`~lanner.tasks.review.ReviewSettings`' fields: ``split`` (train), ``folds`` (3): models, each
    trained with the run's settings without one fold (``time``: all of them together), predict the
    images they never saw (0: the run's own model, fast and less reliable); ``device``; ``export``
    ("labelme" or "coco") and ``out``: also the flagged images with the suggestions marked, for an
    annotation tool (``force``: replace ``out``; an earlier review newer than the checkpoint is
    exported as it is unless ``refresh``)."""
    console = _console(console)
    try:
        settings = ReviewSettings(data, **options)
    except TypeError as e:
        raise ConfigError(f"review: {e}") from None
    summary = review_run(run, settings, lambda config: train(config, console, evaluate_after=False), console)
    if report:
        console.print(f"report: {build_report(Path(run))}")
    return summary


# ------------------------------------------------------------------------- small verbs for the CLI
def export(
    run: str | Path, out: str | Path | None = None, *, check: bool = True, format: str = "onnx"
) -> dict:
    """The run's model as one ONNX file plus a JSON spec (see :func:`lanner.export.export_run`), or
    ``format="safetensors"``: a folder with a model card that timm and the Hub read (:mod:`lanner.share`)."""
    if format == "safetensors":
        return share.export_safetensors(run, out)
    if format != "onnx":
        raise ConfigError(f"--format {format!r}: lanner exports onnx or safetensors")
    return export_run(run, out, check=check)


def push(run: str | Path, repo_id: str, *, private: bool = False) -> dict:
    """Upload the run's model (the safetensors folder, model card included) to the Hugging Face Hub."""
    return share.push(run, repo_id, private=private)


def list_models(task: str = "classify", pattern: str = "*") -> list[str]:
    return models.list_models(task, pattern)


def model_summary(model: str | Path, task: str = "classify", image_size: int | None = None, depth: int = 1):
    """A layer summary (:class:`lanner.models.summary.ModelSummary`) of a model name of ``task``'s
    namespace, or of a run directory's trained model with its frozen parts marked."""
    if RunDir(model).holds_run():
        return summarise_run(model, image_size, depth)
    return summarise_name(task, str(model), image_size, depth)


def pretrained_tags(name: str) -> tuple[list[str], str | None]:
    """Pretrained weights that exist for a model, and which one ``--pretrained imagenet`` picks."""
    return pretrained_weights(name)


def demo(
    task: str = "classify", run: str | None = None, data_dir: str | Path | None = None,
    console: Console | None = None,
) -> Path:  # fmt: skip
    """The built-in example end to end: write data, train, evaluate, predict, report."""
    here = sys.modules[__name__]
    return run_demo(here, task=task, run=run, data_dir=Path(data_dir) if data_dir else None, console=console)


def relaunch(devices: int, *, device: str | None = None, sync_bn: bool | None = None) -> None:
    """With ``devices`` other than 1, replace this process by torchrun starting that many copies of
    the same command, unless this process already is one of them (under torchrun or srun). What
    several processes cannot do fails here, before any starts."""
    if devices == 1 or distributed.from_environment().enabled:
        return
    distributed.check_sync_batchnorm(sync_bn, choose_device(device or "auto"))
    distributed.relaunch_under_torchrun(devices)


def lost_another_process(error: BaseException) -> bool:
    """Whether ``error`` is a collective of a process group breaking because another process stopped
    (that process printed its own reason)."""
    return distributed.from_environment().enabled and distributed.is_peer_loss(error)


def is_main_process() -> bool:
    """Whether this process speaks for its group: process 0 under torchrun or srun, or the only one."""
    return distributed.from_environment().is_main


def summarise(dataset) -> dict:
    """What ``lanner check`` reports of a dataset as read (e.g. the one ``convert`` returns)."""
    return summarise_dataset(dataset, [])


def set_max_image_pixels(pixels: int | None) -> None:
    """Pillow's decompression-bomb limit for this process (0: none; None: leave it)."""
    set_image_pixel_limit(pixels)


def current_run_dir() -> Path | None:
    """The directory of the run this process is making, once made (None before, or when unknown)."""
    return sessions.current_run_dir


# ------------------------------------------------------------------------------ machine-readable
def headline(metrics: dict) -> dict:
    """The scalar entries of a metrics dict (split, image count, accuracy or mAP, ...)."""
    return {k: v for k, v in metrics.items() if isinstance(v, int | float | str | None) and k != "classes"}


def outputs_dir(run: str | Path | Sequence[str | Path]) -> Path:
    """Where eval and predict of ``run`` write: the run itself, or RUN1/ensemble for several runs."""
    runs = _runs(run)
    return Path(runs[0]) if len(runs) == 1 else Path(runs[0]) / ENSEMBLE_DIR


def run_summary(run: str | Path) -> dict:
    """What ``--json`` prints after training: the run's files and its headline numbers."""
    r = RunDir(run)
    history = read_history(r.history) if r.history.is_file() else []
    metrics = json.loads(r.metrics.read_text()) if r.metrics.is_file() else {}
    return {
        "run": str(r.path),
        "checkpoints": {w: str(r.checkpoint(w)) for w in ("best", "last") if r.checkpoint(w).is_file()},
        "epochs": len(history),
        "last_epoch": {k: _number(v) for k, v in history[-1].items()} if history else None,
        "metrics": headline(metrics),
        "metrics_file": str(r.metrics) if metrics else None,
        "report": str(r.report) if r.report.is_file() else None,
    }


def _number(text: str):
    """A history.csv cell as JSON: a number when it is one, None when empty."""
    try:
        return int(text)
    except ValueError:
        try:
            return float(text)
        except ValueError:
            return text or None
