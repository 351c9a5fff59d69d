"""The command line: options generated from the config, their precedence, and the error boundary."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import typer
import yaml
from helpers import write_digit_folders
from PIL import Image

from lanner import api, cli
from lanner.config import InferenceOptions, TrainConfig, command_options
from lanner.errors import DataError, Interrupted, Terminated

SRC = Path(cli.__file__).resolve().parents[1]

# Every flag the hand-written CLI had: none may disappear (scripts and docs use them).
OLD_FLAGS = {
    "train": "--task --config --run --model --pretrained --image-size --batch-size --epochs --time "
    "--optimizer --lr --weight-decay --schedule --warmup --augment --hflip --no-hflip --balance --classes "
    "--rename --freeze-epochs --patience --monitor --seed --device --precision --tile --overlap "
    "--min-visibility --empty-tile-ratio --set --track --tracking-uri --experiment --dry-run --devices "
    "--no-eval",
    "lr-find": "--task --config --run --model --pretrained --image-size --batch-size --optimizer "
    "--weight-decay --device --precision --tile --overlap --start-lr --end-lr --steps --set",
    "resume": "--lr --epochs --schedule --patience --monitor --no-eval --devices",
    "schedule": "--config --steps-per-epoch --epochs --lr --schedule --name --warmup --batch-size --set "
    "--out",
    "check": "--format --strict --json",
    "convert": "--to --format --strict",
    "eval": "--split --no-report --tile --overlap --no-tile --merge --merge-threshold --full-image-pass "
    "--no-full-image-pass --device --precision",
    "predict": "--out --topk --format --render --tile --overlap --no-tile --merge --merge-threshold "
    "--full-image-pass --no-full-image-pass --device --precision",
    "export": "--out --no-check",
    "report": "--out",
    "models": "--task",
    "demo": "--run --task --data-dir",
}


def flags_of(command: str) -> set[str]:
    params = typer.main.get_command(cli.app).commands[command].params
    return {flag for p in params for flag in (*p.opts, *p.secondary_opts) if flag.startswith("--")}


def lanner(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    """This worktree's CLI in a fresh process (the console script would import the installed copy)."""
    env = {**os.environ, "PYTHONPATH": str(SRC), "COLUMNS": "200"}
    return subprocess.run(
        [sys.executable, "-m", "lanner", *args], cwd=cwd, capture_output=True, text=True, env=env, timeout=120
    )


def python(script: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(SRC), "COLUMNS": "200"}
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script)], cwd=cwd, capture_output=True, text=True, env=env
    )


# ------------------------------------------------------------------------------------- generation
@pytest.mark.parametrize("command", sorted(OLD_FLAGS))
def test_every_flag_of_the_hand_written_cli_still_exists(command):
    missing = set(OLD_FLAGS[command].split()) - flags_of(command)
    assert not missing, f"{command} lost {missing}"


def test_every_config_field_is_an_option_of_train_with_help():
    declared = {o.key for o in command_options(TrainConfig, "train")}
    fields = set(TrainConfig.model_fields) - {"data", "schedule", "augment"}  # DATA is the argument
    assert fields <= declared and {"schedule.name", "schedule.warmup_epochs", "augment.name"} <= declared
    assert all(o.help for o in command_options(TrainConfig, "train"))
    assert {"--val-fraction", "--workers", "--max-image-pixels", "--label-smoothing"} <= flags_of("train")


def test_a_new_field_gets_its_flag_without_touching_the_cli():
    class Extended(TrainConfig):
        mixup_alpha: float = 0.0

    options = {o.key: o for o in command_options(Extended, "train")}
    assert options["mixup_alpha"].flags == ("--mixup-alpha",)
    assert "mixup_alpha" in {o.key for o in command_options(Extended, "lr-find")}


def test_resume_offers_exactly_the_resumable_keys():
    keys = {o.key.split(".")[0] for o in command_options(TrainConfig, "resume")}
    assert keys == set(api.RESUMABLE)
    resumable = {
        "--lr",
        "--epochs",
        "--time",
        "--schedule",
        "--patience",
        "--monitor",
        "--sync-bn",
        "--no-sync-bn",
    }
    assert flags_of("resume") == resumable | {"--no-eval", "--devices", "--unfreeze", "--json"}


@pytest.mark.parametrize("command", ["train", "lr-find", "check", "convert", "eval", "predict"])
def test_every_command_that_reads_images_takes_max_image_pixels(command):
    # data/images.py names this option in its decompression-bomb message
    assert "--max-image-pixels" in flags_of(command)


@pytest.fixture
def captured(monkeypatch, tmp_path):
    """Run the CLI in-process with the api verbs replaced by recorders (nothing is trained)."""
    calls: dict = {}

    def record(name):
        def verb(*args, **kwargs):
            calls[name] = (args, kwargs)

        return verb

    for name in ("train", "resume", "evaluate", "predict", "check"):
        monkeypatch.setattr(api, name, record(name))
    monkeypatch.chdir(tmp_path)
    return calls


def test_list_map_bool_and_renamed_flags_reach_the_config(captured):
    code = cli.run_cli(
        [
            "train",
            "data",
            "--classes",
            "a,b",
            "--rename",
            "x=a",
            "--rename",
            "y=a",
            "--no-hflip",
            "--warmup",
            "2",
            "--schedule",
            "step",
            "--lr",
            "0.02",
            "--image-size",
            "48",
        ]
    )
    assert code == 0
    (cfg, _), _ = captured["train"]
    assert cfg.classes == ["a", "b"] and cfg.rename == {"x": "a", "y": "a"} and cfg.hflip is False
    assert cfg.schedule.warmup_epochs == 2 and cfg.schedule.name == "step"
    assert cfg.lr == 0.02 and cfg.image_size == 48 and cfg.epochs == 10  # not given: the default


def test_config_file_then_options_then_set(captured, tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text(
        yaml.safe_dump(
            {"data": "d", "lr": 0.5, "epochs": 3, "seed": 7, "schedule": {"name": "step", "gamma": 0.3}}
        )
    )
    code = cli.run_cli(
        ["train", "--config", str(config), "--lr", "0.1", "--epochs", "4", "--set", "epochs=5"]
    )
    assert code == 0
    (cfg, _), _ = captured["train"]
    assert (cfg.data, cfg.seed) == ("d", 7)  # from the file
    assert cfg.lr == 0.1  # an option beats the file
    assert cfg.epochs == 5  # --set beats both
    code = cli.run_cli(["train", "--config", str(config), "--warmup", "1"])
    (cfg, _), _ = captured["train"]
    # an option inside a nested spec replaces only its own key
    assert (cfg.schedule.name, cfg.schedule.gamma, cfg.schedule.warmup_epochs) == ("step", 0.3, 1.0)


def test_resume_passes_only_what_was_given(captured):
    assert cli.run_cli(["resume", "r", "--lr", "0.01", "--schedule", "constant", "--no-eval"]) == 0
    (run, _), kwargs = captured["resume"]
    assert run == Path("r")
    assert kwargs == {"evaluate_after": False, "lr": "0.01", "schedule": {"name": "constant"}}
    assert cli.run_cli(["resume", "r", "--lr", "auto"]) == 2


def test_eval_and_predict_share_one_inference_options_object(captured):
    assert cli.run_cli(["eval", "r", "--no-tile", "--merge", "wbf", "--split", "val"]) == 0
    args, kwargs = captured["evaluate"]
    assert args[1:3] == (None, "val")
    assert kwargs == {"report": True, "device": "auto", "precision": "auto", "tile": 0, "merge": "wbf"}
    code = cli.run_cli(
        [
            "predict",
            "r",
            "a.png",
            "--format",
            "coco",
            "--render",
            "out",
            "--tile",
            "512",
            "--full-image-pass",
            "--topk",
            "2",
            "--device",
            "cpu",
        ]
    )
    assert code == 0
    _, kwargs = captured["predict"]
    assert kwargs.pop("console") is cli.console
    assert kwargs == {
        "topk": 2,
        "device": "cpu",
        "precision": "auto",
        "tile": 512,
        "full_image_pass": True,
        "format": "coco",
        "render": Path("out"),
    }
    assert InferenceOptions().as_kwargs() == {"device": "auto", "precision": "auto"}


def test_max_image_pixels_is_applied_before_reading(captured):
    before = Image.MAX_IMAGE_PIXELS
    try:
        assert cli.run_cli(["check", "d", "--max-image-pixels", "123456", "--json"]) == 0
        assert Image.MAX_IMAGE_PIXELS == 123456
        assert cli.run_cli(["eval", "r", "--max-image-pixels", "0"]) == 0
        assert Image.MAX_IMAGE_PIXELS is None  # 0: no limit
    finally:
        Image.MAX_IMAGE_PIXELS = before


# --------------------------------------------------------------------------------- honest options
OUT_OF_RANGE = [
    (["--lr", "-1"], "--lr"),
    (["--epochs", "0"], "--epochs"),
    (["--batch-size", "0"], "--batch-size"),
    (["--batch-size", "-4"], "--batch-size"),
    (["--image-size", "0"], "--image-size"),
    (["--time", "0m"], "--time"),
    (["--overlap", "-0.1"], "--overlap"),
    (["--val-fraction", "0"], "--val-fraction"),
    (["--val-fraction", "1"], "--val-fraction"),
    (["--weight-decay", "-0.01"], "--weight-decay"),
    (["--patience", "-1"], "--patience"),
    (["--workers", "-2"], "--workers"),
    (["--warmup", "-1"], "--warmup"),
]


@pytest.fixture(scope="module")
def digits(tmp_path_factory) -> Path:
    return write_digit_folders(tmp_path_factory.mktemp("data") / "digits", per_class=2)


@pytest.mark.parametrize(("args", "flag"), OUT_OF_RANGE)
def test_out_of_range_options_fail_before_any_file_is_written(
    args, flag, digits, tmp_path, monkeypatch, capsys
):
    monkeypatch.chdir(tmp_path)  # a real dataset: were the option not refused, training would start
    code = cli.run_cli(["train", str(digits), "--run", str(tmp_path / "run"), "--no-eval", *args])
    out = capsys.readouterr().out
    assert code == 2 and flag in out and ("valid: " in out or "positive duration" in out), out
    assert not (tmp_path / "run").exists() and not (tmp_path / "runs").exists()


def test_out_of_range_fails_in_a_real_process_too(tmp_path):
    done = lanner("train", "nowhere", "--lr", "-1", "--run", str(tmp_path / "run"), cwd=tmp_path)
    assert done.returncode == 2 and "--lr" in done.stdout and ">= 0" in done.stdout, done.stdout + done.stderr
    assert "Traceback" not in done.stdout + done.stderr and not (tmp_path / "run").exists()
    done = lanner("eval", str(tmp_path), "--overlap", "-1", cwd=tmp_path)
    assert done.returncode == 2 and "--overlap" in done.stdout and ">= 0" in done.stdout


# ---------------------------------------------------------------------------------- error boundary
@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["train", "--no-such-option"], "No such option: --no-such-option"),
        (["trian"], "No such command 'trian'"),
        (["eval"], "Missing argument"),
        (["schedule", "--steps-per-epoch", "0"], "--steps-per-epoch"),
    ],
)
def test_usage_errors_print_usage_and_exit_2(args, message, tmp_path):
    done = lanner(*args, cwd=tmp_path)
    assert done.returncode == 2, done.stdout + done.stderr
    assert "Usage:" in done.stderr and message in done.stderr and "Traceback" not in done.stderr


def test_a_bad_choice_names_the_option_and_the_choices(tmp_path):
    done = lanner("train", "d", "--optimizer", "adamx", cwd=tmp_path)
    assert done.returncode == 2 and "Traceback" not in done.stdout + done.stderr
    assert "--optimizer" in done.stdout and "'adamw', 'adam' or 'sgd'" in done.stdout


def test_a_bug_is_one_line_and_its_traceback_goes_to_the_runs_error_log(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    done = python(
        f"""
        import sys
        from lanner import api, cli

        def broken(*args, **kwargs):
            raise RuntimeError("boom\\nsecond line")

        api.report = broken
        sys.argv = ["lanner", "report", {str(run)!r}]
        cli.main()
        """,
        cwd=tmp_path,
    )
    assert done.returncode == 1, done.stderr
    lines = [line for line in (done.stdout + done.stderr).splitlines() if line.strip()]
    assert len(lines) == 1 and "RuntimeError: boom second line" in lines[0], lines
    assert str(run / "error.log") in lines[0]
    log = (run / "error.log").read_text()
    assert "Traceback (most recent call last)" in log and "in broken" in log and "lanner report" in log


def test_a_bug_without_a_run_directory_logs_in_the_working_directory(tmp_path):
    done = python(
        """
        import sys
        from lanner import api, cli

        def broken(*args, **kwargs):
            raise ValueError("no models today")

        api.list_models = broken
        sys.argv = ["lanner", "models"]
        cli.main()
        """,
        cwd=tmp_path,
    )
    assert done.returncode == 1 and "lanner-error.log" in done.stderr
    assert "ValueError: no models today" in (tmp_path / "lanner-error.log").read_text()


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (DataError("x.png: not an image"), 2),
        (Interrupted(3, 4), 130),
        (KeyboardInterrupt(), 130),
        (Terminated(), 143),
    ],
)
def test_exit_codes(error, code, monkeypatch, tmp_path):
    def raising(*args, **kwargs):
        raise error

    monkeypatch.setattr(api, "report", raising)
    assert cli.run_cli(["report", str(tmp_path)]) == code
    assert not (tmp_path / "error.log").exists()  # not a bug: no traceback written


def test_sigterm_outside_training_exits_143(tmp_path):
    done = python(
        """
        import os, signal, sys, time
        from lanner import api, cli

        def slow(*args, **kwargs):
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(30)

        api.report = slow
        sys.argv = ["lanner", "report", "."]
        cli.main()
        """,
        cwd=tmp_path,
    )
    assert done.returncode == 143, done.stderr


# --------------------------------------------------------------------------------------- layering
def test_help_and_shell_completion_answer_without_importing_torch(tmp_path):
    """`lanner --help` and the shell's TAB (typer's completion protocol, the one --install-completion
    sets up) never import torch: they take a fraction of a second, not torch's seconds."""
    script = (
        "import atexit, sys\n"
        "atexit.register(lambda: print('torch imported:', 'torch' in sys.modules, file=sys.stderr))\n"
        "from lanner.cli import main\nmain()"
    )

    def run(*args: str, **env: str) -> subprocess.CompletedProcess:
        env = {**os.environ, "PYTHONPATH": str(SRC), "COLUMNS": "200", **env}
        command = [sys.executable, "-c", script, *args]
        return subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, env=env, timeout=120)

    done = run("--help")
    assert done.returncode == 0 and "Usage: lanner" in done.stdout and "--install-completion" in done.stdout
    assert "torch imported: False" in done.stderr, done.stderr
    for words, expected in (("lanner tr", ["train"]), ("lanner train --epo", ["--epochs"])):
        complete = {
            "_LANNER_COMPLETE": "complete_bash",
            "COMP_WORDS": words,
            "COMP_CWORD": str(len(words.split()) - 1),
        }
        done = run(**complete)
        assert done.returncode == 0 and done.stdout.split() == expected, done.stdout + done.stderr
        assert "torch imported: False" in done.stderr, done.stderr


def test_config_does_not_import_the_engine(tmp_path):
    done = python(
        "import sys, lanner.config; print(sorted(m for m in sys.modules if m.startswith('lanner.')))",
        cwd=tmp_path,
    )
    assert done.returncode == 0 and "lanner.engine" not in done.stdout, done.stdout + done.stderr


def test_cli_reaches_the_library_only_through_the_api():
    tree = ast.parse(Path(cli.__file__).read_text())
    imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.level == 0}
    imported |= {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    imported |= {  # modules imported lazily: _lazy_module("lanner.api")
        n.args[0].value
        for n in ast.walk(tree)
        if isinstance(n, ast.Call) and getattr(n.func, "id", "") == "_lazy_module"
    }
    ours = {m for m in imported if m and m.startswith("lanner")}
    assert "lanner.api" in ours
    assert ours <= {"lanner", "lanner.api", "lanner.config", "lanner.errors", "lanner._progress"}, ours


def test_the_schedule_spec_lives_in_the_config_and_the_engine_re_exports_it():
    from lanner.config import ScheduleSpec
    from lanner.engine import schedules

    assert schedules.ScheduleSpec is ScheduleSpec and "cosine" in schedules.SCHEDULES
