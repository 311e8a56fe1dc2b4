"""Metrics against values worked out by hand, tables, best-epoch selection, the evaluate wrapper."""

from __future__ import annotations

import pytest

from nlp_transfer.metrics import SELECTABLE_METRICS, compute_metrics, is_better, scalar_metrics
from nlp_transfer.reporting.markdown import confusion_table, per_class_table
from nlp_transfer.tasks import get_task

# A 3-class example with 10 examples:
#
#   y_true = 0 0 0 0 1 1 1 2 2 2
#   y_pred = 0 0 1 2 1 1 0 2 2 1
#
# Confusion matrix (rows: true, columns: predicted)
#            pred 0  pred 1  pred 2   support
#   true 0      2       1       1        4
#   true 1      1       2       0        3
#   true 2      0       1       2        3
#   predicted   3       4       3
#
# accuracy = (2 + 2 + 2) / 10 = 0.6
# precision = TP / predicted:  c0 = 2/3, c1 = 2/4 = 1/2, c2 = 2/3
# recall    = TP / support:    c0 = 2/4 = 1/2, c1 = 2/3, c2 = 2/3
# F1 = 2PR / (P + R):
#   c0 = 2 * (2/3)(1/2) / (2/3 + 1/2) = (2/3) / (7/6) = 4/7
#   c1 = 2 * (1/2)(2/3) / (1/2 + 2/3) = 4/7
#   c2 = 2/3
# macro:    P = (2/3 + 1/2 + 2/3) / 3 = 11/18,  R = (1/2 + 2/3 + 2/3) / 3 = 11/18,
#           F1 = (4/7 + 4/7 + 2/3) / 3 = 38/63
# micro:    P = R = F1 = 6 correct / 10 = 0.6 (single-label: equals accuracy)
# weighted (by support 4, 3, 3):
#           P  = (4 * 2/3 + 3 * 1/2 + 3 * 2/3) / 10 = (8/3 + 3/2 + 2) / 10 = 37/60
#           R  = (4 * 1/2 + 3 * 2/3 + 3 * 2/3) / 10 = 6/10
#           F1 = (4 * 4/7 + 3 * 4/7 + 3 * 2/3) / 10 = (4 + 2) / 10 = 6/10
Y_TRUE = [0, 0, 0, 0, 1, 1, 1, 2, 2, 2]
Y_PRED = [0, 0, 1, 2, 1, 1, 0, 2, 2, 1]
NAMES = ["neg", "neu", "pos"]


def test_hand_computed_three_class_example():
    m = compute_metrics(Y_TRUE, Y_PRED, label_names=NAMES)
    assert m["accuracy"] == pytest.approx(0.6)
    assert m["num_examples"] == 10
    assert m["confusion_matrix"] == [[2, 1, 1], [1, 2, 0], [0, 1, 2]]
    assert m["labels"] == NAMES

    per = m["per_class"]
    assert list(per) == NAMES
    assert per["neg"] == pytest.approx({"precision": 2 / 3, "recall": 1 / 2, "f1": 4 / 7, "support": 4})
    assert per["neu"] == pytest.approx({"precision": 1 / 2, "recall": 2 / 3, "f1": 4 / 7, "support": 3})
    assert per["pos"] == pytest.approx({"precision": 2 / 3, "recall": 2 / 3, "f1": 2 / 3, "support": 3})
    assert all(isinstance(v["support"], int) for v in per.values())

    assert m["precision_macro"] == pytest.approx(11 / 18)
    assert m["recall_macro"] == pytest.approx(11 / 18)
    assert m["f1_macro"] == pytest.approx(38 / 63)
    for k in ("precision_micro", "recall_micro", "f1_micro"):
        assert m[k] == pytest.approx(0.6)
    assert m["precision_weighted"] == pytest.approx(37 / 60)
    assert m["recall_weighted"] == pytest.approx(0.6)
    assert m["f1_weighted"] == pytest.approx(0.6)


def test_every_selectable_metric_is_computed():
    from nlp_transfer.metrics import MULTI_LABEL_METRICS, REGRESSION_METRICS, SINGLE_LABEL_METRICS, multilabel_metrics, regression_metrics

    computed = {
        SINGLE_LABEL_METRICS: compute_metrics(Y_TRUE, Y_PRED),
        MULTI_LABEL_METRICS: multilabel_metrics([[1, 0], [0, 1]], [[1, 1], [0, 1]]),
        REGRESSION_METRICS: regression_metrics([1.0, 2.0, 3.0], [1.5, 2.0, 2.0]),
    }
    for keys, m in computed.items():
        for key in keys:
            if key != "loss":  # loss comes from the model, not from predictions
                assert isinstance(m[key], float), key
    assert set(SELECTABLE_METRICS) == {"auto", *(k for keys in computed for k in keys)}  # auto: the task's default


def test_inputs_may_be_numpy_or_tensors():
    import numpy as np
    import torch

    a = compute_metrics(np.array(Y_TRUE), torch.tensor(Y_PRED))
    b = compute_metrics(Y_TRUE, Y_PRED)
    assert a == b


def test_class_never_predicted_counts_zero():
    # y_true = 0 0 1 1 2 2, y_pred = 0 0 1 1 1 1: class 2 is never predicted.
    # c0: P = 2/2 = 1,  R = 2/2 = 1,  F1 = 1
    # c1: P = 2/4 = 1/2, R = 2/2 = 1, F1 = 2 * (1/2) / (3/2) = 2/3
    # c2: P = 0/0 -> 0 (zero_division), R = 0/2 = 0, F1 = 0
    # macro P = 1/2, macro R = 2/3, macro F1 = (1 + 2/3) / 3 = 5/9, accuracy = 4/6
    m = compute_metrics([0, 0, 1, 1, 2, 2], [0, 0, 1, 1, 1, 1])
    assert m["per_class"]["2"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 2}
    assert m["per_class"]["1"] == pytest.approx({"precision": 0.5, "recall": 1.0, "f1": 2 / 3, "support": 2})
    assert m["precision_macro"] == pytest.approx(1 / 2)
    assert m["recall_macro"] == pytest.approx(2 / 3)
    assert m["f1_macro"] == pytest.approx(5 / 9)
    assert m["accuracy"] == pytest.approx(4 / 6)
    assert m["confusion_matrix"] == [[2, 0, 0], [0, 2, 0], [0, 2, 0]]


def test_labels_default_to_ids():
    m = compute_metrics(Y_TRUE, Y_PRED)
    assert m["labels"] == ["0", "1", "2"]
    assert list(m["per_class"]) == ["0", "1", "2"]


def test_label_names_are_used_as_given_order():
    m = compute_metrics([0, 1, 1], [0, 1, 0], label_names=["zebra", "apple"])
    assert m["labels"] == ["zebra", "apple"]
    assert m["per_class"]["zebra"]["support"] == 1 and m["per_class"]["apple"]["support"] == 2
    assert m["per_class"]["zebra"]["precision"] == pytest.approx(1 / 2)  # predicted 0 twice, one right


def test_num_labels_adds_zero_support_rows():
    # y_true = 0 1 1, y_pred = 0 1 0, 4 classes (2 and 3 never occur)
    # c0: P = 1/2, R = 1, F1 = 2/3;  c1: P = 1, R = 1/2, F1 = 2/3;  c2, c3: all 0
    # macro F1 over 4 classes = (2/3 + 2/3) / 4 = 1/3; weighted F1 = (1 * 2/3 + 2 * 2/3) / 3 = 2/3
    m = compute_metrics([0, 1, 1], [0, 1, 0], num_labels=4)
    assert m["labels"] == ["0", "1", "2", "3"]
    assert m["confusion_matrix"] == [[1, 0, 0, 0], [1, 1, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]]
    for c in ("2", "3"):
        assert m["per_class"][c] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0}
    assert m["f1_macro"] == pytest.approx(1 / 3)
    assert m["f1_weighted"] == pytest.approx(2 / 3)
    assert m["f1_micro"] == pytest.approx(2 / 3) == m["accuracy"]


def test_label_names_fix_the_number_of_classes():
    m = compute_metrics([0, 0], [0, 0], label_names=["a", "b", "c"])
    assert len(m["confusion_matrix"]) == 3 and m["confusion_matrix"][0] == [2, 0, 0]
    assert m["per_class"]["c"]["support"] == 0


def test_mismatched_lengths_raise():
    with pytest.raises(ValueError, match="3 items.*2"):
        compute_metrics([0, 1, 1], [0, 1])


def test_no_examples_raise():
    with pytest.raises(ValueError, match="zero examples"):
        compute_metrics([], [])


def test_ids_outside_the_label_range_raise():
    with pytest.raises(ValueError, match="0..1"):
        compute_metrics([0, 3], [0, 1], label_names=["a", "b"])
    with pytest.raises(ValueError, match="0..2"):
        compute_metrics([0, 1], [0, -1], num_labels=3)


def test_label_names_and_num_labels_must_agree():
    with pytest.raises(ValueError, match="label_names"):
        compute_metrics([0, 1], [0, 1], label_names=["a", "b", "c"], num_labels=2)


def test_is_better():
    assert is_better("f1_macro", 0.5, None)
    assert is_better("loss", 9.0, None)
    assert is_better("f1_macro", 0.6, 0.5) and not is_better("f1_macro", 0.4, 0.5)
    assert is_better("accuracy", 0.9, 0.8)
    assert is_better("loss", 0.4, 0.5) and not is_better("loss", 0.6, 0.5)
    # a tie keeps the earlier best
    assert not is_better("f1_macro", 0.5, 0.5) and not is_better("loss", 0.5, 0.5)


def test_scalar_and_format_metrics():
    m = compute_metrics(Y_TRUE, Y_PRED, label_names=NAMES)
    s = scalar_metrics(m)
    assert "per_class" not in s and "confusion_matrix" not in s and "labels" not in s
    assert s["accuracy"] == pytest.approx(0.6) and s["num_examples"] == 10
    assert get_task("single_label").log_line(m) == "accuracy 0.6000 f1_macro 0.6032 precision_macro 0.6111 recall_macro 0.6111"
    assert get_task("regression").log_line({"mse": 0.25, "pearson": 0.5}) == "mse 0.2500 pearson 0.5000"


def test_per_class_table():
    table = per_class_table(compute_metrics(Y_TRUE, Y_PRED, label_names=NAMES))
    assert table.splitlines() == [
        "| class | precision | recall | F1 | support |",
        "|---|---:|---:|---:|---:|",
        "| neg | 0.6667 | 0.5000 | 0.5714 | 4 |",
        "| neu | 0.5000 | 0.6667 | 0.5714 | 3 |",
        "| pos | 0.6667 | 0.6667 | 0.6667 | 3 |",
    ]


def test_confusion_table():
    table = confusion_table(compute_metrics(Y_TRUE, Y_PRED, label_names=NAMES))
    assert table.splitlines() == [
        "| true \\ predicted | neg | neu | pos |",
        "|---|---:|---:|---:|",
        "| neg | 2 | 1 | 1 |",
        "| neu | 1 | 2 | 0 |",
        "| pos | 0 | 1 | 2 |",
    ]


# ---- the evaluate wrapper -------------------------------------------------------------
@pytest.fixture
def offline(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    import datasets
    import evaluate.config

    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)  # read once, at import
    monkeypatch.setattr(evaluate.config, "HF_EVALUATE_OFFLINE", True)
    monkeypatch.setattr(evaluate.config, "HF_METRICS_CACHE", str(tmp_path / "metrics"))  # not the user's cache


def test_evaluate_metric_add_batch_equals_compute_metrics(offline):
    from nlp_transfer.metrics import ClassificationMetrics

    metric = ClassificationMetrics(label_names=NAMES)
    metric.add_batch(predictions=Y_PRED[:4], references=Y_TRUE[:4])
    metric.add_batch(predictions=Y_PRED[4:], references=Y_TRUE[4:])
    result = metric.compute()
    assert result == compute_metrics(Y_TRUE, Y_PRED, label_names=NAMES)
    assert result["f1_macro"] == pytest.approx(38 / 63)


def test_evaluate_metric_num_labels_and_reuse(offline):
    import evaluate

    from nlp_transfer.metrics import ClassificationMetrics

    metric = ClassificationMetrics(num_labels=4)
    assert isinstance(metric, evaluate.Metric)
    metric.add(prediction=1, reference=1)
    metric.add_batch(predictions=[0, 0], references=[0, 1])
    first = metric.compute()
    assert first == compute_metrics([1, 0, 1], [1, 0, 0], num_labels=4)
    assert first["labels"] == ["0", "1", "2", "3"]
    # compute() empties the metric: the next round starts fresh
    metric.add_batch(predictions=[2, 3], references=[2, 3])
    second = metric.compute()
    assert second["accuracy"] == 1.0 and second["num_examples"] == 2


def test_unknown_attribute_of_metrics_module():
    import nlp_transfer.metrics as metrics

    with pytest.raises(AttributeError):
        metrics.NoSuchThing  # noqa: B018
