"""Image classification: one label per image, any timm model."""

from __future__ import annotations

from lanner.models.classifiers import build_classifier
from lanner.tasks.base import Task, register_task
from lanner.tasks.classify.evaluate import evaluate_classification
from lanner.tasks.classify.export import classifier_export_plan
from lanner.tasks.classify.predict import predict_classification
from lanner.tasks.classify.report import GALLERY_KEYS, classify_badness
from lanner.tasks.classify.setup import prepare_classification


class Classify(Task):
    name = "classify"
    monitor = "val_acc"
    gallery_keys = GALLERY_KEYS

    def prepare(self, config, run, device, console, fresh):
        return prepare_classification(config, run, device, console, fresh)

    def build_model(self, meta):
        return build_classifier(meta.model_name, len(meta.classes))[0]

    def evaluate(self, loaded, data, split, options, console):
        return evaluate_classification(loaded, data, split, console, options)

    def predict(self, loaded, inputs, out, options, console):
        return predict_classification(loaded, inputs, out, options, console)

    def export_plan(self, loaded):
        return classifier_export_plan(loaded)

    def gallery_prepare(self, item, threshold):
        item["badness"] = classify_badness(item)

    def gallery_classes(self, item):
        return {item.get("gt_label")}


register_task(Classify())
