"""The run's pictures: learning curves with the best epoch marked, one confusion matrix per task."""

from __future__ import annotations

from PIL import Image

from cnnjobs.results.plots import learning_curves, save_plots
from cnnjobs.results.summary import DataFacts, TrainSummary


def test_save_plots_writes_curves_and_a_confusion_matrix_per_task(tmp_path):
    rows = [{"epoch": e, "train/loss": 1 / e, "train/acc": 0.5 + e / 20, "val/loss": 1.2 / e, "val/acc": 0.4 + e / 25}
            for e in range(1, 6)]
    rows[1] = {k: v for k, v in rows[1].items() if not k.startswith("val/")}  # an epoch without validation
    summary = TrainSummary(job="job", run_id="run", run_dir=str(tmp_path), started="now", monitor="val/acc",
                           mode="max", epochs=5, best_epoch=4, stopped_early=True, evaluated="test",
                           data=DataFacts(shards="x", classes={"digit": ["a", "b", "c"]}),
                           confusion={"digit": [[5, 1, 0], [0, 6, 0], [2, 0, 4]], "big": [[1] * 40] * 40})
    assert save_plots(str(tmp_path), summary, rows) == ["learning_curves.png", "confusion_digit.png",
                                                        "confusion_big.png"]
    for name in ("learning_curves.png", "confusion_digit.png", "confusion_big.png"):
        assert Image.open(tmp_path / name).size[0] > 300
    axes = learning_curves(rows, 4, stopped_early=True).axes
    legend = [text.get_text() for text in axes[0].get_legend().get_texts()]
    assert "best epoch 4 (early stop restored it)" in legend and "stopped at epoch 5" in legend
    assert len(axes[0].lines[1].get_xdata()) == 4, "val loss drawn only for validated epochs"
