"""Share a model the way people do: a safetensors folder with a model card, and the Hugging Face Hub.

``lanner export RUN --format safetensors`` writes ``model.safetensors``, ``config.json`` and a
``README.md`` model card (plus the training curves). A classifier's folder is written by timm's own
``save_for_hf``, so ``timm.create_model("local-dir:FOLDER", pretrained=True)`` (or
``hf-hub:USER/REPO`` once pushed; ``pretrained=True`` loads the weights) builds it with its classes
(``label_names``) and preprocessing (``pretrained_cfg``). Every folder
also carries lanner's checkpoint description under ``config.json["lanner"]``, so
``lanner predict FOLDER images/`` and ``lanner.load(FOLDER)`` work on it like on the run.

``lanner push RUN USER/REPO`` exports that folder and uploads it with ``huggingface_hub``.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from lanner import __version__
from lanner._io import write_json, write_text
from lanner.errors import ConfigError
from lanner.rundir import RunDir
from lanner.tasks.loading import LoadedRun, load_run

PIPELINE = {"classify": "image-classification", "detect": "object-detection"}


def export_safetensors(run: str | Path, out: str | Path | None = None) -> dict:
    """The run's best model as a folder (default RUN/export/safetensors); what was written."""
    loaded = load_run(run, device="cpu")
    folder = Path(out) if out else RunDir(run).export / "safetensors"
    folder.mkdir(parents=True, exist_ok=True)
    lanner_info = {**loaded.meta.to_checkpoint(), "lanner_version": __version__}
    if _is_timm(loaded.model):
        _save_timm(loaded, folder, lanner_info)
    else:
        _save_plain(loaded, folder, lanner_info)
    curves = loaded.run.curves_plot
    if curves.is_file():
        shutil.copyfile(curves, folder / "curves.png")
    write_text(folder / "README.md", model_card(loaded, folder))
    files = {name: str(folder / name) for name in ("model.safetensors", "config.json", "README.md")}
    return {"folder": str(folder), "task": loaded.meta.task, "classes": loaded.classes, **files}


def _is_timm(model) -> bool:
    """A timm model carries its pretrained config (input size, mean/std, ...)."""
    return hasattr(model, "pretrained_cfg") and hasattr(model, "num_classes")


def _save_timm(loaded: LoadedRun, folder: Path, lanner_info: dict) -> None:
    from timm.models import save_for_hf

    prep = loaded.meta.get("preprocessing")
    data_config = {  # lanner's preprocessing in timm's words: resize to cache_size, centre crop
        "input_size": (3, prep["image_size"], prep["image_size"]),
        "crop_pct": prep["crop_pct"],
        "crop_mode": "center",
        "interpolation": prep.get("interpolation", "bilinear"),
        "mean": tuple(prep["mean"]),
        "std": tuple(prep["std"]),
    }
    config = {"label_names": loaded.classes, "lanner": lanner_info}
    save_for_hf(
        loaded.model, str(folder), model_config=config, safe_serialization=True, data_config=data_config
    )


def _save_plain(loaded: LoadedRun, folder: Path, lanner_info: dict) -> None:
    """A model timm cannot build (a detector): the weights, and lanner's description to rebuild it."""
    from safetensors.torch import save_file

    state = {k: v.contiguous() for k, v in loaded.model.state_dict().items()}
    save_file(state, str(folder / "model.safetensors"), metadata={"format": "pt"})
    config = {"architecture": loaded.meta.model_name, "label_names": loaded.classes, "lanner": lanner_info}
    write_json(folder / "config.json", config)


# ----------------------------------------------------------------------------------- model card
def model_card(loaded: LoadedRun, folder: Path) -> str:
    """README.md: what the model is, the data it saw, its metrics, its curve, how to use it, its limits."""
    run = loaded.run
    data = _read_json(run.data_check)
    metrics = _read_json(run.metrics)
    parts = [
        _front_matter(loaded),
        f"# {run.path.name}\n\n{_summary(loaded)}\n",
        _data_section(data),
        _metrics_section(metrics),
        "## Training curve\n\n![training curves](curves.png)\n" if (folder / "curves.png").is_file() else "",
        _usage_section(loaded, folder),
        _limits_section(loaded, data, metrics),
    ]
    return "\n".join(p for p in parts if p)


def _read_json(path: Path) -> dict:
    return json.loads(path.read_text()) if path.is_file() else {}


def _front_matter(loaded: LoadedRun) -> str:
    library = "timm" if _is_timm(loaded.model) else "pytorch"
    tags = ["lanner", loaded.meta.task, *(["timm"] if library == "timm" else [])]
    lines = ["---", f"library_name: {library}", f"pipeline_tag: {PIPELINE.get(loaded.meta.task, 'other')}"]
    lines += ["tags:", *(f"- {t}" for t in tags), "---", ""]
    return "\n".join(lines)


def _summary(loaded: LoadedRun) -> str:
    size = loaded.meta.get("preprocessing", {}).get("image_size") or loaded.meta.get("image_size")
    return (
        f"A {PIPELINE.get(loaded.meta.task, loaded.meta.task).replace('-', ' ')} model "
        f"(`{loaded.meta.model_name}`, {size} px input) for {len(loaded.classes)} classes: "
        f"{', '.join(loaded.classes)}. Trained with lanner {loaded.meta.version}."
    )


def _data_section(data: dict) -> str:
    if not data:
        return ""
    counts = data.get("images_per_class") or data.get("boxes_per_class") or {}
    unit = "images" if "images_per_class" in data else "boxes"
    rows = "\n".join(f"| {name} | {n} |" for name, n in counts.items())
    return (
        f"## Training data\n\n{data.get('num_images')} images ({data.get('format')}), splits "
        f"{data.get('images_per_split')}, imbalance ratio {data.get('imbalance_ratio')}.\n\n"
        f"| class | {unit} |\n|---|---|\n{rows}\n"
    )


def _metrics_section(metrics: dict) -> str:
    if not metrics:
        return "## Metrics\n\nNot evaluated yet (`lanner eval RUN`).\n"
    headline = {k: v for k, v in metrics.items() if isinstance(v, int | float) and k != "num_images"}
    table = "\n".join(f"| {k} | {v:.4f} |" for k, v in headline.items())
    per_class = metrics.get("per_class") or {}
    keys = [
        k
        for k in ("precision", "recall", "f1", "ap", "support")
        if per_class and k in next(iter(per_class.values()))
    ]
    rows = "\n".join(
        f"| {name} | " + " | ".join(_cell(v.get(k)) for k in keys) + " |" for name, v in per_class.items()
    )
    per_class_table = f"\n| class | {' | '.join(keys)} |\n|---|{'---|' * len(keys)}\n{rows}\n" if keys else ""
    return (
        f"## Metrics\n\nOn the {metrics.get('split')} split ({metrics.get('num_images')} images).\n\n"
        f"| metric | value |\n|---|---|\n{table}\n{per_class_table}"
    )


def _cell(v) -> str:
    return f"{v:.4f}" if isinstance(v, float) else str(v)


def _usage_section(loaded: LoadedRun, folder: Path) -> str:
    timm_use = TIMM_USE if _is_timm(loaded.model) else ""
    return "## How to use\n\n" + timm_use + LANNER_USE


TIMM_USE = """```python
import timm

model = timm.create_model("hf-hub:USER/REPO", pretrained=True).eval()  # or "local-dir:FOLDER"
config = timm.data.resolve_data_config({}, model=model)  # the preprocessing
labels = model.pretrained_cfg["label_names"]
```

"""
LANNER_USE = """With lanner (the same preprocessing as training, typed results):

```python
import lanner

model = lanner.load("FOLDER")
print(model.predict("image.jpg"))
```

or `lanner predict FOLDER images/`.
"""


def _limits_section(loaded: LoadedRun, data: dict, metrics: dict) -> str:
    smallest = min((data.get("images_per_class") or data.get("boxes_per_class") or {"": 0}).values())
    return (
        "## Intended use\n\nRecognising "
        f"{', '.join(loaded.classes)} in images like the training data. It predicts one of these "
        "classes for any input: images of anything else get a confident-looking wrong answer.\n\n"
        "## Limitations\n\n"
        f"- Trained on {data.get('num_images', 'an unknown number of')} images; the rarest class has "
        f"{smallest}. The metrics above come from {metrics.get('num_images', 'no')} held-out images of "
        "the same source and say little about other cameras, lighting or populations.\n"
        "- Check it on your own data (`lanner eval`) before relying on it.\n"
    )


# ----------------------------------------------------------------------------------------- push
def push(run: str | Path, repo_id: str, *, private: bool = False, hub=None) -> dict:
    """Export ``run`` as a safetensors folder and upload it to the Hugging Face Hub as ``repo_id``.
    ``hub`` is a ``huggingface_hub.HfApi`` (default: one with the token ``hf auth login`` saved)."""
    if repo_id.count("/") != 1:
        raise ConfigError(f"{repo_id!r}: a Hub repository is named USER/NAME (or ORG/NAME)")
    hub = hub or _hub()
    written = export_safetensors(run)
    hub.create_repo(repo_id, repo_type="model", private=private, exist_ok=True)
    commit = hub.upload_folder(
        repo_id=repo_id,
        folder_path=written["folder"],
        repo_type="model",
        commit_message=f"lanner {__version__}: {Path(run).name}",
    )
    return {**written, "repo_id": repo_id, "url": f"https://huggingface.co/{repo_id}", "commit": str(commit)}


def _hub():
    from huggingface_hub import HfApi  # a dependency of lanner (and of timm)

    return HfApi()
