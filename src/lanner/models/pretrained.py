"""Where pretrained weights come from, as a local file: ``--pretrained`` resolved.

``imagenet`` (the model's default timm tag) or a timm tag (``resnet50.a1_in1k``) is fetched through
huggingface_hub into the standard Hugging Face cache when the hub is reachable, and read from that
cache when it is not or when ``HF_HUB_OFFLINE=1``. ``coco`` is torchvision's COCO weights of a
torchvision detector, in torch's hub cache (``$TORCH_HOME/hub/checkpoints``), same rules. A path is a
weights file (safetensors, a ``.pth``/``.pt`` state dict, a timm checkpoint) or a lanner run or
checkpoint. With neither network nor cache the error names the exact file to fetch and where to put it.

Every file is read without running code: safetensors, or ``torch.load(weights_only=True)``; a file
that cannot be read so is a :class:`CheckpointError` naming it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from lanner.errors import CheckpointError, ConfigError
from lanner.rundir import CheckpointMeta, RunDir

SOURCE_KINDS = ("timm", "torchvision", "torchvision_backbone", "file", "run")
HF_WEIGHTS_FILE = "model.safetensors"
OFFLINE_VALUES = ("1", "true", "yes", "on")


@dataclass
class WeightsSource:
    """``--pretrained`` resolved: what it is, and (once fetched) the local file holding it."""

    spec: str  # what the user gave
    kind: str  # one of SOURCE_KINDS
    path: Path | None = None  # the local file (None until fetched for hub weights)
    timm_name: str | None = None  # "resnet18.a1_in1k" for timm weights
    torchvision: str | None = None  # the torchvision builder, for coco (or its backbone's imagenet) weights
    backbone_weights: str | None = None  # torchvision's enum for imagenet: ResNet50_Weights.IMAGENET1K_V1
    classes: list[str] | None = None  # the source's own classes (a run, COCO), for class surgery
    class_offset: int = 0  # rows before the first class in the source's heads (background)
    data_cfg: dict[str, Any] = field(default_factory=dict)  # timm's mean, std, input size, crop_pct, ...

    def describe(self) -> str:
        coco = f"{self.torchvision} COCO_V1" if self.torchvision else None
        name = self.timm_name or self.backbone_weights or coco
        return f"{self.spec} ({name})" if name and name != self.spec else self.spec


# ------------------------------------------------------------------------------------- resolution
def timm_arch(model: nn.Module) -> str | None:
    """The timm architecture whose ImageNet weights fit the model (or its backbone), if any."""
    cfg = getattr(model, "pretrained_cfg", None)
    if isinstance(cfg, dict) and cfg.get("architecture"):
        return cfg["architecture"]
    return next((m.timm_name for m in model.modules() if getattr(m, "timm_name", None)), None)


def resolve_source(spec: str, model: nn.Module) -> WeightsSource:
    """``--pretrained SPEC`` for ``model``: checked and described, nothing read or fetched yet."""
    path = Path(spec).expanduser()
    if path.exists():
        return _local_source(spec, path)
    if spec == "coco":
        return _coco_source(model)
    if spec == "imagenet" and getattr(model, "torchvision_builder", None):
        return _backbone_source(model.torchvision_builder)
    arch = timm_arch(model)
    name = _timm_name(spec, arch)
    if name is None:
        raise ConfigError(
            f"--pretrained {spec!r}: no such file or run, and not a weights name; give a weights file "
            "(.safetensors, .pth), a lanner run directory, 'imagenet', 'coco' or a timm tag such as "
            f"{(arch or 'resnet50') + '.a1_in1k'}"
        )
    return WeightsSource(spec, "timm", timm_name=name, data_cfg=timm_data_cfg(name))


def _timm_name(spec: str, arch: str | None) -> str | None:
    """``imagenet`` -> the architecture's default tag; a timm tag -> itself, checked against the model."""
    from timm.models import get_pretrained_cfg, split_model_name_tag

    if spec == "imagenet":
        cfg = get_pretrained_cfg(arch) if arch else None
        if cfg is None:
            what = f"{arch} has" if arch else "this model has"
            raise ConfigError(
                f"--pretrained imagenet: {what} no timm ImageNet weights; try --pretrained coco"
            )
        return f"{arch}.{cfg.tag}" if cfg.tag else arch
    spec_arch, tag = split_model_name_tag(spec)
    cfg = get_pretrained_cfg(spec) if tag else None
    if cfg is None:
        return None
    if arch is not None and spec_arch != arch:
        raise ConfigError(f"--pretrained {spec}: weights of {spec_arch}, but the model is {arch}")
    return spec


def timm_data_cfg(name: str) -> dict[str, Any]:
    """What the weights expect of their inputs (timm's pretrained cfg): size, mean, std, crop, resize."""
    from timm.models import get_pretrained_cfg

    cfg = get_pretrained_cfg(name)
    return {
        "input_size": int(cfg.input_size[-1]),
        "mean": [float(v) for v in cfg.mean],
        "std": [float(v) for v in cfg.std],
        "crop_pct": float(cfg.crop_pct),
        "interpolation": str(cfg.interpolation),
    }


def pretrained_tags(name: str) -> tuple[list[str], str | None]:
    """The weights ``--pretrained`` knows for a model name: (names, what ``imagenet`` picks / ``coco``)."""
    import timm
    from timm.models import get_pretrained_cfg

    try:  # torchvision's detectors: their COCO weights
        from torchvision.models import get_model_weights

        if get_model_weights(name).COCO_V1:
            backbone = [] if name.startswith("ssd") else ["imagenet (the backbone's)"]
            return ["coco", *backbone], "coco"
    except (ValueError, KeyError, AttributeError):
        pass
    arch = name.removeprefix("fcos_") if not timm.is_model(name) else name
    cfg = get_pretrained_cfg(arch) if timm.is_model(arch) else None
    tags = timm.list_pretrained(arch + ".*") if cfg is not None else []
    return tags, (f"{arch}.{cfg.tag}" if cfg is not None and cfg.tag else None)


def _coco_source(model: nn.Module) -> WeightsSource:
    builder = getattr(model, "torchvision_builder", None)
    if builder is None:
        raise ConfigError(
            "--pretrained coco: COCO weights exist for torchvision's detectors only (fasterrcnn_*, "
            "retinanet_*, fcos_resnet50_fpn, ssdlite320_mobilenet_v3_large); use --pretrained imagenet "
            "for a timm backbone"
        )
    from torchvision.models import get_model_weights

    categories = list(get_model_weights(builder).COCO_V1.meta["categories"])
    return WeightsSource("coco", "torchvision", torchvision=builder, classes=categories[1:], class_offset=1)


def backbone_weights_enum(builder: str):
    """The ImageNet weights torchvision's ``builder(weights_backbone=...)`` takes (the enum member
    its legacy ``pretrained_backbone=True`` picked: IMAGENET1K_V1)."""
    import typing

    from torchvision.models import detection

    hint = typing.get_type_hints(getattr(detection, builder))["weights_backbone"]
    enum = next(a for a in typing.get_args(hint) if a is not type(None))
    return enum.IMAGENET1K_V1


def _backbone_source(builder: str) -> WeightsSource:
    if builder.startswith("ssd"):
        raise ConfigError(
            f"--pretrained imagenet: {builder}'s backbone differs from the ImageNet classifier's "
            "(torchvision reduces its tail when trained from scratch); use --pretrained coco"
        )
    member = backbone_weights_enum(builder)
    name = f"{type(member).__name__}.{member.name}"
    return WeightsSource("imagenet", "torchvision_backbone", torchvision=builder, backbone_weights=name)


def _local_source(spec: str, path: Path) -> WeightsSource:
    if path.is_dir():
        path = RunDir(path).find_checkpoint("best")
    return WeightsSource(spec, "file", path=path)


# ---------------------------------------------------------------------------------------- fetching
def offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").lower() in OFFLINE_VALUES


def hf_cache_dir() -> Path:
    """The Hugging Face hub cache, as huggingface_hub finds it (read now, not at import)."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"])
    home = os.environ.get("HF_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", "~/.cache"), "huggingface"
    )
    return Path(home).expanduser() / "hub"


def fetch(source: WeightsSource) -> WeightsSource:
    """The source with ``path`` set: downloaded into (or found in) the standard cache."""
    if source.path is not None:
        return source
    if source.kind == "timm":
        source.path = _hub_file(source.timm_name)
    elif source.kind == "torchvision_backbone":
        member = backbone_weights_enum(source.torchvision)
        source.path = _torch_hub_file(member.url, f"imagenet: {source.backbone_weights}")
    else:
        from torchvision.models import get_model_weights

        url = get_model_weights(source.torchvision).COCO_V1.url
        source.path = _torch_hub_file(url, f"coco: {source.torchvision}'s COCO")
    return source


def _hub_file(name: str) -> Path:
    from timm.models import get_pretrained_cfg

    cfg = get_pretrained_cfg(name)
    if not cfg.hf_hub_id:
        raise ConfigError(
            f"--pretrained {name}: timm has these weights only at {cfg.url or 'no known address'}; "
            "download the file and pass it with --pretrained FILE"
        )
    repo, filename = cfg.hf_hub_id.split("@")[0], cfg.hf_hub_filename or HF_WEIGHTS_FILE
    from huggingface_hub import hf_hub_download

    cache = hf_cache_dir()
    try:
        return Path(hf_hub_download(repo, filename, cache_dir=cache, local_files_only=offline()))
    except Exception as e:  # offline, no network, not in the cache: all mean "fetch it yourself"
        reason = "HF_HUB_OFFLINE is set and" if offline() else "the Hugging Face hub cannot be reached and"
        raise ConfigError(
            f"--pretrained {name}: {reason} the weights are not in the Hugging Face cache {cache} "
            f"({type(e).__name__}). Fetch `{filename}` of the repo `{repo}` "
            f"(https://huggingface.co/{repo}/resolve/main/{filename}) on a machine with network, e.g. "
            f"`hf download {repo} {filename}`, and copy that machine's cache folder "
            f"(models--{repo.replace('/', '--')}) into {cache} (or point HF_HUB_CACHE at it); "
            f"or pass the downloaded file itself: --pretrained path/to/{filename}"
        ) from None


def _torch_hub_file(url: str, what: str) -> Path:
    """torch's cached copy of ``url`` (``$TORCH_HOME/hub/checkpoints``), downloaded when missing and
    allowed; else an error naming the file and where it goes."""
    folder = Path(torch.hub.get_dir()) / "checkpoints"
    target = folder / url.rsplit("/", 1)[-1]
    if target.is_file():
        return target
    try:
        if offline():
            raise ConnectionError("HF_HUB_OFFLINE is set")
        folder.mkdir(parents=True, exist_ok=True)
        torch.hub.download_url_to_file(url, str(target), progress=False)
        return target
    except Exception as e:
        raise ConfigError(
            f"--pretrained {what} weights are not in torch's cache and cannot be "
            f"downloaded ({type(e).__name__}: {e}). Fetch {url} on a machine with network and put it "
            f"at {target} (the folder is $TORCH_HOME/hub/checkpoints); or pass the downloaded file "
            f"itself: --pretrained path/to/{target.name}"
        ) from None


# ----------------------------------------------------------------------------------------- reading
def read_weights(path: Path) -> tuple[dict[str, torch.Tensor], CheckpointMeta | None]:
    """A file's tensors (and its lanner metadata, for a lanner checkpoint); never runs code from it."""
    try:
        raw = _load(path)
    except Exception as e:  # safetensors and torch raise many types for corrupt or hostile files
        raise CheckpointError(f"{path}: cannot read checkpoint ({type(e).__name__}: {e})") from None
    meta = CheckpointMeta.from_checkpoint(raw, str(path)) if _is_lanner(raw) else None
    state = _state_dict(raw)
    if not state:
        raise CheckpointError(f"{path}: cannot read checkpoint (it holds no weights)")
    return state, meta


def _load(path: Path) -> Any:
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    return torch.load(path, map_location="cpu", weights_only=True)


def _is_lanner(raw: Any) -> bool:
    return isinstance(raw, dict) and "meta" in raw and "state_dict" in raw and "model_name" in raw


def _state_dict(raw: Any) -> dict[str, torch.Tensor]:
    """The tensors of a state dict or of a timm/torch training checkpoint (``module.`` stripped)."""
    if not isinstance(raw, dict):
        return {}
    for key in ("state_dict", "model", "state_dict_ema", "model_ema"):
        if isinstance(raw.get(key), dict):
            raw = raw[key]
            break
    return {k.removeprefix("module."): v for k, v in raw.items() if isinstance(v, torch.Tensor)}
