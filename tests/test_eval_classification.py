import numpy as np
import pytest
import torch
from sklearn.metrics import classification_report, confusion_matrix

from lanner.eval.classification import classification_metrics, format_report


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_per_class_report_equals_sklearn(seed):
    rng = np.random.default_rng(seed)
    classes = ["cat", "dog", "bird", "fish", "frog", "never_predicted"]
    targets = torch.tensor(rng.integers(0, 5, 200))
    probs = torch.tensor(rng.random((200, 6)), dtype=torch.float32)
    probs[:, 5] = 0  # one class is never predicted: precision 0 by sklearn's zero_division default
    probs[torch.arange(200), targets] += torch.tensor(rng.random(200) > 0.4, dtype=torch.float32)
    ours = classification_metrics(probs, targets, classes)
    preds = probs.argmax(1).numpy()
    ref = classification_report(
        targets.numpy(), preds, labels=range(6), target_names=classes, output_dict=True, zero_division=0
    )
    for name in classes:
        for key, ref_key in (
            ("precision", "precision"),
            ("recall", "recall"),
            ("f1", "f1-score"),
            ("support", "support"),
        ):
            assert ours["per_class"][name][key] == pytest.approx(ref[name][ref_key], abs=1e-12)
    for avg, ref_avg in (("macro_avg", "macro avg"), ("weighted_avg", "weighted avg")):
        for key, ref_key in (("precision", "precision"), ("recall", "recall"), ("f1", "f1-score")):
            assert ours[avg][key] == pytest.approx(ref[ref_avg][ref_key], abs=1e-12)
    assert ours["accuracy"] == pytest.approx((preds == targets.numpy()).mean())
    assert ours["confusion_matrix"] == confusion_matrix(targets.numpy(), preds, labels=range(6)).tolist()
    top5 = np.argsort(-probs.numpy(), 1)[:, :5]
    assert ours["top5_accuracy"] == pytest.approx(
        np.mean([t in row for t, row in zip(targets.numpy(), top5, strict=True)])
    )
    assert "never_predicted" in format_report(ours)


def test_no_top5_below_five_classes():
    m = classification_metrics(torch.eye(3), torch.tensor([0, 1, 2]), ["a", "b", "c"])
    assert m["accuracy"] == 1.0 and "top5_accuracy" not in m


def test_validation_f1_and_recall_equal_sklearn_on_the_classes_present():
    from sklearn.metrics import f1_score, recall_score

    from lanner.tasks.classify.training import balanced_metrics

    rng = np.random.default_rng(3)
    target = torch.from_numpy(rng.choice([0, 1, 3], size=200, p=[0.7, 0.25, 0.05]))  # class 2 absent
    pred = torch.from_numpy(rng.integers(0, 4, size=200))  # predicts class 2 sometimes
    got = balanced_metrics(pred, target, 4)
    present = [0, 1, 3]
    f1 = f1_score(target, pred, labels=present, average="macro", zero_division=0)
    recall = recall_score(target, pred, labels=present, average=None, zero_division=0).min()
    assert got == pytest.approx({"val_macro_f1": f1, "val_min_recall": recall}, abs=1e-12)
