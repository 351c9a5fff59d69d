"""Image classification as a training task: cached images in, logits [B, C] out.

Batches are cut from the packed uint8 cache (see :mod:`lanner.data.cache`) and augmented as a
whole batch with one ``roi_align`` call (random resized crop for every image at once), which keeps
the data side far below the model's cost on a CPU without worker processes.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torchvision.ops import roi_align

from lanner.data.affine import is_identity, random_affines, warp_batch
from lanner.data.box_transforms import FILL
from lanner.data.pixels import Preprocessing, batch_generator, centre_crop, eval_batch, normalise, to_float
from lanner.engine.distributed import shard_batches
from lanner.engine.trainer import TrainTask
from lanner.eval.classification import confusion_matrix
from lanner.tasks.base import SHORT_RUN_EPOCHS, TrainRecipe, auto_augment
from lanner.tasks.classify import resizing

AUGMENT_PRESETS = {
    # scale range of the random resized crop (fraction of the cached square), colour jitter strength
    "none": None,
    "light": ((0.7, 1.0), 0.1),
    "default": ((0.35, 1.0), 0.2),
    "strong": ((0.08, 1.0), 0.4),
}


def random_resized_crop_boxes(
    n: int, side: int, scale: tuple[float, float], g: torch.Generator
) -> torch.Tensor:
    """[n, 4] xyxy crop windows inside a side x side square, area fraction in ``scale``, ratio 3/4..4/3."""
    area = torch.empty(n).uniform_(*scale, generator=g) * side * side
    log_ratio = torch.empty(n).uniform_(math.log(3 / 4), math.log(4 / 3), generator=g)
    ratio = torch.exp(log_ratio)
    w = torch.sqrt(area * ratio).clamp(max=side)
    h = torch.sqrt(area / ratio).clamp(max=side)
    x0 = torch.rand(n, generator=g) * (side - w)
    y0 = torch.rand(n, generator=g) * (side - h)
    return torch.stack([x0, y0, x0 + w, y0 + h], dim=1)


def augment_batch(
    images_u8, prep: Preprocessing, preset: str, hflip: bool, g: torch.Generator, device="cpu",
    geometry: tuple[float, float, float, float] = (0.0, 0.0, 0.0, 0.0), size: int | None = None,
) -> torch.Tensor:  # fmt: skip
    """Cached squares [B, S', S', 3] uint8 -> augmented, normalised [B, 3, S, S] float on ``device``;
    ``geometry``: max rotation, shear (degrees), translation, scale (fractions), see data.affine;
    ``size``: the output's side when not ``prep.image_size`` (progressive resizing).

    Random numbers come from ``g`` on the CPU whatever the device, so a batch is the same batch on
    any device; the pixel work runs on ``device``.
    """
    setting, size = AUGMENT_PRESETS[preset], size or prep.image_size
    x = to_float(images_u8, device)  # [B, 3, S', S']
    if setting is None:
        x = centre_crop(x, prep.image_size)
        if size != prep.image_size:  # the same view, fewer pixels
            x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    else:
        scale, jitter = setting
        b, side = x.shape[0], x.shape[-1]
        boxes = random_resized_crop_boxes(b, side, scale, g)
        rois = torch.cat([torch.arange(b, dtype=torch.float32)[:, None], boxes], dim=1).to(x.device)
        x = roi_align(x, rois, output_size=size, spatial_scale=1.0, sampling_ratio=2, aligned=True)
        if jitter > 0:
            brightness = (1 + (torch.rand(b, 1, 1, 1, generator=g) * 2 - 1) * jitter).to(x.device)
            contrast = (1 + (torch.rand(b, 1, 1, 1, generator=g) * 2 - 1) * jitter).to(x.device)
            mean = x.mean(dim=(1, 2, 3), keepdim=True)
            x = ((x - mean) * contrast + mean) * brightness
            x = x.clamp_(0, 1)
    if not is_identity(geometry):
        fill = torch.tensor(FILL, dtype=x.dtype, device=x.device).view(1, 3, 1, 1) / 255.0
        x = warp_batch(x, random_affines(x.shape[0], x.shape[-1], geometry, g), fill)
    if hflip:
        flip = (torch.rand(x.shape[0], generator=g) < 0.5).to(x.device)
        x[flip] = x[flip].flip(-1)
    return normalise(x, prep)


def random_erase(x: torch.Tensor, prob: float, g: torch.Generator) -> torch.Tensor:
    """Random erasing (Zhong et al. 2017; timm's ``RandomErasing``, mode "pixel"): in each normalised
    image of ``x`` [B, C, H, W], with probability ``prob``, one rectangle of 2-33% of the area, aspect
    ratio 0.3-3.3, is replaced by normal noise. Written here because timm's loops over the images in
    Python and draws from the global RNG: this draws from ``g``, so a resumed run erases the same."""
    b, _, h, w = x.shape
    area = torch.empty(b).uniform_(0.02, 1 / 3, generator=g) * h * w
    ratio = torch.exp(torch.empty(b).uniform_(math.log(0.3), math.log(1 / 0.3), generator=g))
    eh = torch.sqrt(area * ratio).clamp(1, h).floor()
    ew = torch.sqrt(area / ratio).clamp(1, w).floor()
    top = (torch.rand(b, generator=g) * (h - eh + 1)).floor()
    left = (torch.rand(b, generator=g) * (w - ew + 1)).floor()
    erased = torch.rand(b, generator=g) < prob
    rows, cols = torch.arange(h).view(1, h, 1), torch.arange(w).view(1, 1, w)
    inside = (rows >= top.view(b, 1, 1)) & (rows < (top + eh).view(b, 1, 1))
    inside = inside & (cols >= left.view(b, 1, 1)) & (cols < (left + ew).view(b, 1, 1))
    mask = (inside & erased.view(b, 1, 1)).unsqueeze(1).to(x.device)  # [B, 1, H, W]
    noise = torch.randn(x.shape, generator=g, dtype=x.dtype).to(x.device)
    return torch.where(mask, noise, x)


def mix_batch(
    x: torch.Tensor, y: torch.Tensor, num_classes: int, alphas: tuple[float, float], g: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mixup (Zhang et al. 2018) or CutMix (Yun et al. 2019) of a batch with a shuffled copy of itself:
    ``alphas`` = (mixup, cutmix) Beta parameters, 0 = off; with both, each batch picks one. Returns
    the mixed images and soft targets [B, C]; random numbers from ``g`` (a resume redraws the same)."""
    mixup, cutmix = alphas
    use_cutmix = cutmix > 0 and (mixup == 0 or torch.rand(1, generator=g).item() < 0.5)
    alpha = cutmix if use_cutmix else mixup
    lam = float(np.random.default_rng(int(torch.randint(2**31 - 1, (1,), generator=g))).beta(alpha, alpha))
    perm = torch.randperm(len(x), generator=g).to(x.device)
    if use_cutmix:
        h, w = x.shape[-2:]
        cy, cx = (int(torch.randint(n, (1,), generator=g)) for n in (h, w))
        half_h, half_w = int(h * math.sqrt(1 - lam)) // 2, int(w * math.sqrt(1 - lam)) // 2
        y0, y1, x0, x1 = max(cy - half_h, 0), min(cy + half_h, h), max(cx - half_w, 0), min(cx + half_w, w)
        x[..., y0:y1, x0:x1] = x[perm][..., y0:y1, x0:x1]
        lam = 1 - (y1 - y0) * (x1 - x0) / (h * w)  # the share of pixels each image kept
    else:
        x = lam * x + (1 - lam) * x[perm]
    onehot = F.one_hot(y, num_classes).float()
    return x, lam * onehot + (1 - lam) * onehot[perm]


def batch_bounds(n: int, batch_size: int) -> list[tuple[int, int]]:
    """(start, stop) of each batch of an epoch: every image once, the last batch possibly smaller.

    A last batch of a single image is folded into the one before it, because batch norm cannot
    train on one sample (and one-sample steps are noise anyway).
    """
    bounds = [(s, min(s + batch_size, n)) for s in range(0, n, batch_size)]
    if len(bounds) > 1 and bounds[-1][1] - bounds[-1][0] == 1:
        bounds[-2:] = [(bounds[-2][0], n)]
    return bounds


IMBALANCE_RATIO = 3.0  # largest / smallest class above which ``balance: auto`` acts


def imbalance_ratio(counts: np.ndarray) -> float:
    present = counts[counts > 0]
    return float(present.max() / present.min()) if len(present) else 1.0


def resolve_balance(balance: str, counts: np.ndarray) -> str:
    """``auto``: logit adjustment when the training classes are imbalanced beyond IMBALANCE_RATIO."""
    if balance != "auto":
        return balance
    return "logit_adjust" if imbalance_ratio(counts) > IMBALANCE_RATIO else "none"


def balanced_metrics(pred: torch.Tensor, target: torch.Tensor, num_classes: int) -> dict[str, float]:
    """Macro-F1 and the worst class's recall over the classes present in ``target``: what accuracy hides
    on imbalanced data (a minority class never predicted still leaves accuracy high)."""
    cm = confusion_matrix(pred, target, num_classes).double()
    tp, support, predicted = cm.diag(), cm.sum(1), cm.sum(0)
    present = support > 0  # so neither division below is by 0
    f1 = (2 * tp / (support + predicted))[present]  # 2TP / (2TP + FP + FN)
    recall = (tp / support)[present]
    return {"val_macro_f1": f1.mean().item(), "val_min_recall": recall.min().item()}


class ClassificationTask(TrainTask):
    """Supplies the trainer with batches, loss and validation metrics for image classification."""

    monitor = "val_acc"

    def __init__(
        self,
        *,
        images: np.ndarray,  # [N, S', S', 3] uint8, the cache
        labels: np.ndarray,  # [N] int
        train_idx: np.ndarray,
        val_idx: np.ndarray,
        classes: list[str],
        prep: Preprocessing,
        recipe: TrainRecipe,
        device: torch.device | None = None,
    ) -> None:
        batch_size, balance, label_smoothing = recipe.batch_size, recipe.balance, recipe.label_smoothing
        augment, hflip, seed = recipe.augment, recipe.hflip, recipe.seed
        self.mix_alphas, self.erase = (recipe.mixup, recipe.cutmix), recipe.erase
        self.images, self.labels = images, torch.as_tensor(labels, dtype=torch.long)
        self.train_idx, self.val_idx = np.sort(train_idx), np.sort(val_idx)
        self.train_eval_idx = recipe.train_eval_sample(self.train_idx, len(self.val_idx))
        self.classes, self.prep, self.batch_size = classes, prep, batch_size
        self.device = device or torch.device("cpu")
        counts = np.bincount(labels[self.train_idx], minlength=len(classes)).astype(np.float64)
        # "auto" is resolved when the trainer tells the planned epochs (plan_epochs); until then, default.
        self.augment_setting, self.hflip, self.seed = augment, hflip, seed
        self.augment = "default" if augment == "auto" else augment
        self._augment_told: str | None = None  # the preset auto last said it stands for
        self.geometry = recipe.geometry
        self.progressive, self.planned_epochs = recipe.progressive, 0
        self._resizing_on: bool | None = None  # what the last progressive-resizing line said
        self.set_class_counts(counts, balance, label_smoothing)

    def plan_epochs(self, epochs: int) -> str | None:
        self.planned_epochs = epochs
        said = [line for line in (self._tell_resizing(epochs), self._auto_augment(epochs)) if line]
        return "\n".join(said) or None

    def _tell_resizing(self, epochs: int) -> str | None:
        """The progressive-resizing line, once, and again only when the run's length switches it on or off."""
        line = resizing.describe(self.prep.image_size, self.progressive, epochs)
        on = epochs >= resizing.MIN_EPOCHS
        if line is None or on == self._resizing_on:
            return None
        self._resizing_on = on
        return line

    def train_size(self, epoch: int) -> int:
        """The input size training batches of ``epoch`` are cropped to (progressive resizing)."""
        return resizing.epoch_size(self.prep.image_size, self.progressive, epoch, self.planned_epochs)

    def step_cost(self, epoch: int, epochs: int) -> float:
        full = self.prep.image_size
        return resizing.step_cost(resizing.epoch_size(full, self.progressive, epoch, epochs), full)

    def _auto_augment(self, epochs: int) -> str | None:
        if self.augment_setting != "auto":
            return None
        preset, told = auto_augment(epochs), self._augment_told
        self.augment = self._augment_told = preset
        if preset == told:
            return None
        why = f"--augment auto: {epochs} planned epochs, light below {SHORT_RUN_EPOCHS}"
        return f"augmentation: {preset} ({why})"

    def set_class_counts(self, counts: np.ndarray, balance: str, label_smoothing: float) -> None:
        """The training images per class, and the loss and balance that follow from them."""
        self.class_counts = counts
        self.balance = resolve_balance(balance, counts)
        weight = None
        if self.balance == "weighted":
            weight = torch.tensor(
                counts.sum() / (len(self.classes) * np.maximum(counts, 1)), dtype=torch.float32
            )
        self.loss_fn = torch.nn.CrossEntropyLoss(weight=weight, label_smoothing=label_smoothing).to(
            self.device
        )
        # Logit adjustment (Menon et al. 2021): train on logits + log(prior) so that the model's own
        # logits come out balanced; nothing changes at prediction time.
        prior = np.maximum(counts, 1) / max(counts.sum(), 1)
        self.logit_shift = torch.tensor(np.log(prior), dtype=torch.float32, device=self.device)

    @property
    def num_train_images(self) -> int:
        return len(self.train_idx)

    @property
    def num_val_images(self) -> int:
        return len(self.val_idx)

    def steps_per_epoch(self) -> int:
        return len(batch_bounds(len(self.train_idx), self.batch_size))

    def epoch_order(self, epoch: int) -> np.ndarray:
        g = torch.Generator().manual_seed(self.seed * 100_003 + epoch)
        n = len(self.train_idx)
        if self.balance == "oversample":
            # Same number of draws per epoch, each class equally likely.
            w = 1.0 / self.class_counts[self.labels[self.train_idx].numpy()]
            pick = torch.multinomial(torch.as_tensor(w), n, replacement=True, generator=g)
        else:
            pick = torch.randperm(n, generator=g)
        return self.train_idx[pick.numpy()]

    def train_batches(self, epoch: int, skip: int = 0, shard: tuple[int, int] = (0, 1)):
        """Batches of ``epoch`` from step ``skip``; ``shard`` (rank, processes): this process's share."""
        order = self.epoch_order(epoch)
        bounds = batch_bounds(len(order), self.batch_size)
        for b in shard_batches(len(bounds), skip, *shard):
            start, stop = bounds[b]
            sorted_idx = np.sort(order[start:stop])  # sequential reads from the memmap
            yield self.training_batch(self.images[sorted_idx], self.labels[sorted_idx], epoch, b)

    def training_batch(self, images_u8, labels: torch.Tensor, epoch: int, number: int):
        """Cached squares [B, S', S', 3] uint8 and labels [B] -> the augmented batch (x, y) on the device;
        ``number`` (the batch's place in the epoch) seeds its augmentation."""
        g = batch_generator(self.seed, epoch, number)
        size = self.train_size(epoch)
        x = augment_batch(images_u8, self.prep, self.augment, self.hflip, g, self.device, self.geometry, size)
        if self.erase > 0:
            x = random_erase(x, self.erase, g)
        y = labels.to(self.device)
        if any(self.mix_alphas) and len(y) > 1:
            x, y = mix_batch(x, y, len(self.classes), self.mix_alphas, g)  # y: soft targets
        return x.contiguous(memory_format=torch.channels_last), y

    def training_step(self, model, batch) -> tuple[torch.Tensor, int]:
        x, y = batch
        logits = model(x)
        if self.balance == "logit_adjust":
            logits = logits + self.logit_shift
        return self.loss_fn(logits, y), len(y)

    def predict_logits(self, model, idx: np.ndarray, batch_size: int | None = None) -> torch.Tensor:
        """Logits [len(idx), C] for cached images, in the order of ``idx``."""
        bs = batch_size or self.batch_size * 2
        out = []
        for start in range(0, len(idx), bs):
            chunk = idx[start : start + bs]
            x = eval_batch(self.images[chunk], self.prep, self.device)
            out.append(model(x.contiguous(memory_format=torch.channels_last)).float().cpu())
        return torch.cat(out) if out else torch.zeros(0, len(self.classes))

    def _accuracy(self, logits: torch.Tensor, y: torch.Tensor, prefix: str) -> dict[str, float]:
        metrics = {f"{prefix}_acc": (logits.argmax(1) == y).float().mean().item()}
        if len(self.classes) >= 5:
            top5 = logits.topk(5, dim=1).indices
            metrics[f"{prefix}_top5"] = (top5 == y[:, None]).any(1).float().mean().item()
        return metrics

    def validate(self, model) -> dict[str, float]:
        """Val metrics, and the same accuracy on the fixed sample of training images (no augmentation)."""
        if len(self.val_idx) == 0:
            return {}
        logits = self.predict_logits(model, self.val_idx)
        y = self.labels[self.val_idx]
        metrics = {"val_loss": F.cross_entropy(logits, y).item(), **self._accuracy(logits, y, "val")}
        if len(self.train_eval_idx):
            train_logits = self.predict_logits(model, self.train_eval_idx)
            metrics |= self._accuracy(train_logits, self.labels[self.train_eval_idx], "train")
        return {**metrics, **balanced_metrics(logits.argmax(1), y, len(self.classes))}

    def meta(self) -> dict:
        return {"task": "classify", "classes": list(self.classes), "preprocessing": self.prep.to_dict()}
