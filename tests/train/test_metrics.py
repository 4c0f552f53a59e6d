"""Epoch metrics from tallies: accuracy, macro-F1 and top-5 agree with scikit-learn; the per-class table."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.metrics import accuracy_score, f1_score, top_k_accuracy_score

from cnnjobs.metrics import most_confused
from cnnjobs.results.epochs import class_rows
from cnnjobs.train.tally import Tally


def test_tally_metrics_match_sklearn_per_task_and_combined():
    rng = np.random.default_rng(0)
    logits = {"article": torch.tensor(rng.normal(size=(60, 8)), dtype=torch.float32),
              "gender": torch.tensor(rng.normal(size=(60, 1)), dtype=torch.float32)}  # one sigmoid logit
    labels = {"article": torch.tensor(rng.integers(0, 8, 60)), "gender": torch.tensor(rng.integers(0, 2, 60))}
    tally = Tally({"article": 8, "gender": 2})
    for part in (slice(0, 25), slice(25, 60)):  # two batches of different sizes
        tally.add({t: v[part] for t, v in logits.items()}, {t: v[part] for t, v in labels.items()},
                  {"article": torch.tensor(2.0), "gender": torch.tensor(0.5)})
    metrics = tally.metrics("val", weights={"article": 0.5})

    article_pred = logits["article"].argmax(1).numpy()
    gender_pred = (logits["gender"][:, 0] > 0).long().numpy()
    assert metrics["val/article/acc"] == pytest.approx(accuracy_score(labels["article"], article_pred))
    assert metrics["val/article/f1"] == pytest.approx(f1_score(labels["article"], article_pred, average="macro"))
    assert metrics["val/article/top5"] == pytest.approx(top_k_accuracy_score(labels["article"],
                                                                             logits["article"].numpy(), k=5))
    assert metrics["val/gender/acc"] == pytest.approx(accuracy_score(labels["gender"], gender_pred))
    assert "val/gender/top5" not in metrics, "top-5 only for tasks with more than 5 classes"
    assert metrics["val/acc"] == pytest.approx((metrics["val/article/acc"] + metrics["val/gender/acc"]) / 2)
    assert metrics["val/loss"] == pytest.approx(0.5 * 2.0 + 1.0 * 0.5), "the weighted sum training minimizes"


def test_per_class_rows_are_seed_003s_holdout_table_with_precision():
    rows = class_rows([[3, 0, 0], [1, 2, 0], [0, 0, 0]], ["car", "frog", "lizard"])
    assert [(r.name, r.count, r.correct) for r in rows] == [("car", 3, 3), ("frog", 3, 2), ("lizard", 0, 0)]
    assert [r.recall for r in rows] == [1.0, pytest.approx(2 / 3), None]  # lizard has no images
    assert [r.precision for r in rows] == [0.75, 1.0, None]  # 3 of the 4 "car" predictions were cars
    assert most_confused(np.array([[3, 0, 0], [1, 2, 0], [0, 0, 0]]), ["car", "frog", "lizard"]) == [
        ("frog", "car", 1)]
