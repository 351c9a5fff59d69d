"""``lanner probe``: a linear probe of pretrained features, written as an ordinary classification run.

The backbone's pooled features (timm's ``forward_head(pre_logits=True)``) are computed once per
image and cached on disk, keyed by model, weights, preprocessing and the image files; scikit-learn's
LogisticRegression is fitted on the train split; its coefficients become the timm classifier's head,
so the run's checkpoint is the backbone plus that head: ``eval``, ``predict``, ``export`` and
``--pretrained RUN`` take it like any other run. RUN/probe.json holds scikit-learn's own scores.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import torch
from rich.console import Console
from torch import nn

from lanner._io import write_json, write_text
from lanner.config import TrainConfig
from lanner.data.cache import default_cache_dir
from lanner.data.pixels import Preprocessing, eval_batch
from lanner.data.split import split_for_run
from lanner.engine.checkpoint import save_checkpoint
from lanner.engine.setup import default_workers, new_run_dir
from lanner.errors import ConfigError, DataError
from lanner.models.classifiers import build_classifier
from lanner.models.devices import choose_device
from lanner.models.transfer import Classes
from lanner.rundir import CheckpointMeta, RunDir
from lanner.tasks.classify.data import cache_records
from lanner.tasks.classify.setup import load_classification_data, preprocessing_for
from lanner.tasks.pretrained import start_from, weights_source

FEATURE_BATCH = 64
DEFAULT_SIZE = 224


def run_probe(config: TrainConfig, console: Console) -> Path:
    """Fit the probe; the run directory (its checkpoint, config, probe.json) for ``api`` to evaluate."""
    if not config.pretrained:
        raise ConfigError("lanner probe needs --pretrained (imagenet, a timm tag, a file or a run)")
    run = RunDir(new_run_dir(config.run, "probe-classify"))
    console.print(f"run directory: [bold]{run.path}[/]")
    config = config.model_copy(
        update={"task": "classify", "run": str(run.path), "model": config.model or "resnet18"}
    )
    dataset = load_classification_data(config)
    split_for_run(dataset, run.split, config.val_fraction, config.seed, True)
    model, mean, std = build_classifier(config.model, len(dataset.classes))
    source = weights_source(config, model, True)
    prep = preprocessing_for(
        Preprocessing(config.image_size or DEFAULT_SIZE, mean, std), source.data_cfg, config.image_size
    )
    start_from(source, model, Classes(list(dataset.classes), dict(config.rename)), run, console)
    cached = cache_records(
        dataset, prep.cache_size, config.cache_dir, config.workers or default_workers(), console
    )
    device = choose_device(config.device)
    key = _features_key(config.model, source.path, prep, [r.path for r in dataset.records])
    feats = _cached_features(model.to(device).eval(), cached.images, prep, device, key, config.cache_dir)
    fitted = _fit(dataset, cached.ok, feats, config.seed)
    _set_head(model, fitted["classifier"], len(dataset.classes))
    _save(run, model.cpu(), config, dataset.classes, prep)
    write_json(run / "probe.json", {k: v for k, v in fitted.items() if k != "classifier"})
    console.print(f"probe: {fitted['summary']}")
    return run.path


def _features_key(model_name: str, weights: Path, prep: Preprocessing, paths: list) -> str:
    stat = weights.stat()
    files = [(str(p), Path(p).stat().st_size, Path(p).stat().st_mtime_ns) for p in paths]
    text = json.dumps([model_name, str(weights), stat.st_size, stat.st_mtime_ns, prep.to_dict(), files])
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def _cached_features(model: nn.Module, images: np.ndarray, prep, device, key: str, cache_dir) -> np.ndarray:
    """Pooled features [N, F] of every cached image, from the disk cache when computed before."""
    path = Path(cache_dir) if cache_dir else default_cache_dir()
    path = path / "probe-features" / f"{key}.npy"
    if path.is_file():
        return np.load(path)
    out = []
    with torch.no_grad():
        for start in range(0, len(images), FEATURE_BATCH):
            x = eval_batch(images[start : start + FEATURE_BATCH], prep, device)
            out.append(model.forward_head(model.forward_features(x), pre_logits=True).float().cpu().numpy())
    feats = np.concatenate(out) if out else np.zeros((0, model.num_features), np.float32)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.save(path, feats)
    return feats


def _fit(dataset, ok: np.ndarray, feats: np.ndarray, seed: int) -> dict:
    from sklearn.linear_model import LogisticRegression

    labels = np.array([r.label for r in dataset.records])
    splits = np.array([r.split for r in dataset.records], dtype=object)
    train = (splits == "train") & ok
    if len(set(labels[train])) < 2:
        raise DataError("lanner probe: the train split needs images of at least two classes")
    clf = LogisticRegression(max_iter=2000, random_state=seed).fit(feats[train], labels[train])
    scores = {}
    for split in ("train", "val", "test"):
        mask = (splits == split) & ok
        if mask.any():
            scores[f"{split}_acc"] = float(clf.score(feats[mask], labels[mask]))
    summary = ", ".join(f"{k} {v:.4f}" for k, v in scores.items()) + " (scikit-learn LogisticRegression)"
    return {"classifier": clf, "sklearn": scores, "num_features": int(feats.shape[1]), "summary": summary}


def _set_head(model: nn.Module, clf, num_classes: int) -> None:
    """The logistic regression as the timm head: the same argmax (and softmax) on the same features."""
    coef, bias = np.zeros((num_classes, clf.coef_.shape[1])), np.zeros(num_classes)
    if len(clf.classes_) == 2 and clf.coef_.shape[0] == 1:  # binary: one row, p(class 1) = sigmoid
        rows, values = (
            clf.classes_,
            (np.vstack([-clf.coef_, clf.coef_]) / 2, np.r_[-clf.intercept_, clf.intercept_] / 2),
        )
    else:
        rows, values = clf.classes_, (clf.coef_, clf.intercept_)
    coef[rows], bias[rows] = values
    bias[[c for c in range(num_classes) if c not in set(rows)]] = -1e4  # classes absent from train
    head = model.get_classifier()
    with torch.no_grad():
        head.weight.copy_(torch.as_tensor(coef, dtype=head.weight.dtype))
        head.bias.copy_(torch.as_tensor(bias, dtype=head.bias.dtype))


def _save(
    run: RunDir, model: nn.Module, config: TrainConfig, classes: list[str], prep: Preprocessing
) -> None:
    config = config.model_copy(update={"epochs": 1})
    meta = CheckpointMeta("classify", list(classes), config.model, config.model_dump(mode="json"))
    meta.details["preprocessing"] = prep.to_dict()
    write_text(run.config, config.to_yaml())
    for which in ("best", "last"):
        save_checkpoint(run.checkpoint(which), {**meta.to_checkpoint(), "state_dict": model.state_dict()})
