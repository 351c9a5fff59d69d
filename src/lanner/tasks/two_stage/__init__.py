"""Detect, then classify: a trained detector finds the objects, a classifier trained on their crops
(``lanner crops``) names them. Nothing new is trained here: the task runs two existing runs as one,
through ``lanner predict/eval DET_RUN ... --classify CLS_RUN``; outputs go to ``DET_RUN/two_stage``.
"""

from __future__ import annotations

from lanner.errors import ConfigError
from lanner.tasks.base import Task, register_task
from lanner.tasks.detect.report import GALLERY_KEYS, detect_badness, match_detections
from lanner.tasks.two_stage.evaluate import evaluate_two_stage
from lanner.tasks.two_stage.pipeline import TASK_NAME
from lanner.tasks.two_stage.predict import predict_two_stage

HOW = (
    "a two-stage pipeline is not trained itself: train a detector, cut its data's boxes with "
    "`lanner crops DATA OUT`, train a classifier on OUT, then "
    "`lanner predict DET_RUN IMAGES --classify CLS_RUN`"
)


class TwoStageTask(Task):
    """``loaded`` in evaluate/predict is a :class:`~lanner.tasks.two_stage.pipeline.TwoStage`."""

    name = TASK_NAME
    monitor = "val_map"
    gallery_keys = GALLERY_KEYS

    def prepare(self, config, run, device, console, fresh):
        raise ConfigError(HOW)

    def build_model(self, meta):
        raise ConfigError(HOW)

    def evaluate(self, loaded, data, split, options, console):
        return evaluate_two_stage(loaded, data, split, options, console)

    def predict(self, loaded, inputs, out, options, console):
        return predict_two_stage(loaded, inputs, out, options, console)

    def export_plan(self, loaded):
        raise ConfigError("export the detector and the classifier runs one by one (`lanner export RUN`)")

    def gallery_prepare(self, item, threshold):
        item.update(match_detections(item))
        item["badness"] = detect_badness(item, threshold)

    def gallery_classes(self, item):
        return set(item.get("gt_labels") or []) | set(item.get("pred_labels") or [])


register_task(TwoStageTask())
