"""Image classification: one label per image, any timm model."""

from __future__ import annotations

import torch

from lanner.data.shard_index import is_shard_folder
from lanner.models.classifiers import build_classifier, default_input_size
from lanner.tasks.base import Task, register_task
from lanner.tasks.classify.evaluate import evaluate_classification, evaluate_classification_ensemble
from lanner.tasks.classify.export import classifier_export_plan
from lanner.tasks.classify.predict import (
    classify_images,
    predict_classification,
    predict_classification_ensemble,
)
from lanner.tasks.classify.report import GALLERY_KEYS, classify_badness
from lanner.tasks.classify.review import ClassifyReviewer
from lanner.tasks.classify.setup import prepare_classification
from lanner.tasks.classify.stream_eval import evaluate_on_shards
from lanner.tasks.classify.stream_setup import prepare_streamed_classification


class Classify(Task):
    name = "classify"
    monitor = "val_acc"
    gallery_keys = GALLERY_KEYS

    def prepare(self, config, run, device, console, fresh):
        if is_shard_folder(config.data):  # written by `lanner shard`: streamed, not cached
            return prepare_streamed_classification(config, run, device, console, fresh)
        return prepare_classification(config, run, device, console, fresh)

    def build_model(self, meta):
        return build_classifier(meta.model_name, len(meta.classes))[0]

    def evaluate(self, loaded, data, split, options, console):
        shards = data if data is not None else loaded.config.data
        if is_shard_folder(shards):
            return evaluate_on_shards(loaded, shards, split, console, options)
        return evaluate_classification(loaded, data, split, console, options)

    def predict(self, loaded, inputs, out, options, console):
        return predict_classification(loaded, inputs, out, options, console)

    def predict_images(self, loaded, images, options):
        return classify_images(loaded, images, options.topk)

    def evaluate_ensemble(self, ensemble, data, split, options, console):
        return evaluate_classification_ensemble(ensemble, data, split, console, options)

    def predict_ensemble(self, ensemble, inputs, out, options, console):
        return predict_classification_ensemble(ensemble, inputs, out, options, console)

    def export_plan(self, loaded):
        return classifier_export_plan(loaded)

    def summary_model(self, name, image_size):
        model = build_classifier(name, 1000)[0]  # ImageNet's 1000 classes: the parameter counts quoted
        size = image_size or default_input_size(model)
        return model, torch.zeros(1, 3, size, size)

    def summary_input(self, meta, image_size):
        size = image_size or int(meta.get("preprocessing")["image_size"])
        return torch.zeros(1, 3, size, size)

    def reviewer(self):
        return ClassifyReviewer()

    def gallery_prepare(self, item, threshold):
        item["badness"] = classify_badness(item)

    def gallery_classes(self, item):
        return {item.get("gt_label")}


register_task(Classify())
