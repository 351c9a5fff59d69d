"""Object detection: boxes with classes, torchvision detectors on timm/torchvision backbones; tiled
training and inference for images much larger than the model's input are a mode of this task."""

from __future__ import annotations

import torch

from lanner.data.shard_index import is_shard_folder
from lanner.tasks.base import Task, register_task
from lanner.tasks.detect.evaluate import evaluate_detection_ensemble, evaluate_detection_run
from lanner.tasks.detect.export import detector_export_plan
from lanner.tasks.detect.predict import (
    detect_images,
    predict_detection_ensemble,
    predict_detection_files,
)
from lanner.tasks.detect.report import GALLERY_KEYS, detect_badness, match_detections
from lanner.tasks.detect.review import DetectReviewer
from lanner.tasks.detect.setup import (
    DEFAULT_MODELS,
    build_detector,
    build_detector_from_meta,
    prepare_detection,
)
from lanner.tasks.detect.stream_eval import evaluate_detection_on_shards
from lanner.tasks.detect.stream_setup import prepare_streamed_detection

COCO_CLASSES = 80  # the class count detector sizes are usually quoted at


class Detect(Task):
    name = "detect"
    monitor = "val_map"
    gallery_keys = GALLERY_KEYS

    def prepare(self, config, run, device, console, fresh):
        if is_shard_folder(config.data):  # written by `lanner shard`: streamed, not cached
            return prepare_streamed_detection(config, run, device, console, fresh)
        return prepare_detection(config, run, device, console, fresh)

    def build_model(self, meta):
        return build_detector_from_meta(meta)

    def evaluate(self, loaded, data, split, options, console):
        shards = data if data is not None else loaded.config.data
        if is_shard_folder(shards):
            return evaluate_detection_on_shards(loaded, shards, split, options, console)
        return evaluate_detection_run(loaded, data, split, options, console)

    def predict(self, loaded, inputs, out, options, console):
        return predict_detection_files(loaded, inputs, out, options, console)

    def predict_images(self, loaded, images, options):
        return detect_images(loaded, images, options)

    def evaluate_ensemble(self, ensemble, data, split, options, console):
        return evaluate_detection_ensemble(ensemble, data, split, options, console)

    def predict_ensemble(self, ensemble, inputs, out, options, console):
        return predict_detection_ensemble(ensemble, inputs, out, options, console)

    def export_plan(self, loaded):
        return detector_export_plan(loaded)

    def summary_model(self, name, image_size):
        size = image_size or DEFAULT_MODELS["cpu"][1]
        return build_detector(name, COCO_CLASSES, size), [torch.zeros(3, size, size)]

    def summary_input(self, meta, image_size):
        size = image_size or int(meta.get("image_size"))
        return [torch.zeros(3, size, size)]

    def reviewer(self):
        return DetectReviewer()

    def gallery_prepare(self, item, threshold):
        item.update(match_detections(item))
        item["badness"] = detect_badness(item, threshold)

    def gallery_classes(self, item):
        return set(item.get("gt_labels") or []) | set(item.get("pred_labels") or [])


register_task(Detect())
