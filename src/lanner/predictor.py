"""``lanner.load(RUN)``: a trained run loaded once, predicting on images in memory.

The model, its classes and its preprocessing (or a detector's size, letterbox, score threshold and
tiling) come from the run's checkpoint, exactly as for ``lanner predict``; what differs is the
input (paths, PIL images, HxWx3 uint8 numpy arrays, or lists of them) and the output: typed results
(:class:`~lanner.predict.results.Classification`, :class:`~lanner.predict.results.Detection`)
instead of files.
"""

from __future__ import annotations

from pathlib import Path

from lanner.config import InferenceOptions, validated
from lanner.predict.inputs import as_images
from lanner.tasks.loading import LoadedRun, load_for_inference


class Predictor:
    """A run's model ready to predict: ``predictor.predict(x)``; see :func:`load`."""

    def __init__(self, loaded: LoadedRun, options: InferenceOptions) -> None:
        self._loaded, self.options = loaded, options

    @property
    def classes(self) -> list[str]:
        return self._loaded.classes

    @property
    def task(self) -> str:
        return self._loaded.meta.task

    @property
    def run(self) -> Path:
        return self._loaded.run.path

    def predict(self, x, **option_values):
        """One result for one image (a path, a PIL image or an HxWx3 uint8 array), a list of results
        for a list. Keywords override this predictor's options for this call (``topk=3``, ``tile=0``)."""
        options = self._options(option_values)
        images, single = as_images(x)
        results = self._loaded.task.predict_images(self._loaded, images, options) if images else []
        return results[0] if single else results

    def _options(self, values: dict) -> InferenceOptions:
        if not values:
            return self.options
        current = self.options.model_dump(exclude_none=True)
        return validated(InferenceOptions, {**current, **values}, "options")

    def __repr__(self) -> str:
        return f"Predictor({self.task}, {len(self.classes)} classes, run {self.run})"


def load(run: str | Path, **option_values) -> Predictor:
    """A run's best checkpoint as a :class:`Predictor`. Keywords are
    :class:`~lanner.config.InferenceOptions` (device, precision, topk, tile, ...)."""
    options = validated(InferenceOptions, option_values, "options")
    return Predictor(load_for_inference(run, options.device, options.precision), options)
