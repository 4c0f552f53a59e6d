"""LR schedules and early stopping follow Keras' semantics (seed 004) and the YAML's numbers."""

from __future__ import annotations

import pytest
import torch

from cnnjobs.spec import TrainSpec
from cnnjobs.train.schedules import LrSchedule, early_stopping, make_optimizer


def schedule_for(steps: int = 10, **train) -> tuple[LrSchedule, torch.optim.Optimizer]:
    spec = TrainSpec(**train)
    optimizer = make_optimizer([torch.nn.Parameter(torch.zeros(1))], spec)
    return LrSchedule(spec, optimizer, steps), optimizer


def test_plateau_halves_the_lr_after_patience_validations_down_to_min_lr():
    schedule, _ = schedule_for(lr=0.01, monitor="val/acc", schedule={"type": "plateau", "factor": 0.5,
                                                                     "patience": 2, "min_lr": 0.004})
    lrs = []
    for acc in (0.5, 0.6, 0.6, 0.59, 0.7, 0.7, 0.7, 0.7, 0.7):
        schedule.after_epoch({"val/acc": acc})
        lrs.append(schedule.lr)
    assert lrs == [0.01, 0.01, 0.01, 0.005, 0.005, 0.005, 0.004, 0.004, 0.004]
    schedule.after_epoch({"train/acc": 0.1})  # an epoch without validation counts for nothing
    assert schedule.lr == 0.004


def test_cosine_warms_up_then_decays_to_min_lr_and_step_divides():
    schedule, optimizer = schedule_for(steps=10, epochs=5, lr=0.1, schedule={"type": "cosine", "warmup_epochs": 1,
                                                                             "min_lr": 0.001})
    lrs = []
    for _ in range(50):
        lrs.append(schedule.lr)
        optimizer.step()
        schedule.after_batch()
    assert lrs[0] < 0.02 and max(lrs) == pytest.approx(0.1) and lrs.index(max(lrs)) == 10
    assert lrs[-1] == pytest.approx(0.001, abs=1e-3) and all(a >= b for a, b in zip(lrs[10:], lrs[11:]))
    stepped, optimizer = schedule_for(lr=0.1, schedule={"type": "step", "step_size": 2, "gamma": 0.5})
    seen = []
    for _ in range(5):
        seen.append(stepped.lr)
        optimizer.step()
        stepped.after_epoch({})
    assert seen == pytest.approx([0.1, 0.1, 0.05, 0.05, 0.025])


def test_schedule_state_survives_a_resume():
    first, _ = schedule_for(lr=0.01, schedule={"type": "plateau", "patience": 3})
    for loss in (1.0, 1.1, 1.2):
        first.after_epoch({"val/acc": 1 / loss})
    second, _ = schedule_for(lr=0.01, schedule={"type": "plateau", "patience": 3})
    second.load_state_dict(first.state_dict())
    second.after_epoch({"val/acc": 0.1})
    assert second.lr == pytest.approx(0.001)


def test_early_stopping_counts_validations_without_min_delta_improvement():
    stopper = early_stopping(TrainSpec(monitor="val/acc", early_stopping={"patience": 3, "min_delta": 0.01,
                                                                          "monitor": "val/loss"}))
    assert stopper.monitor == "val/loss" and stopper.mode == "min"
    waits = [stopper.update({"val/loss": loss}) for loss in (1.0, 0.8, 0.795, 0.79, 0.85, 0.7)]
    assert waits == [0, 0, 1, 2, 3, 0]
    assert early_stopping(TrainSpec()) is None


def test_optimizer_options():
    params = [torch.nn.Parameter(torch.zeros(1))]
    sgd = make_optimizer(params, TrainSpec(optimizer="sgd", lr=0.1, momentum=0.9, nesterov=True, weight_decay=1e-4))
    assert isinstance(sgd, torch.optim.SGD) and sgd.defaults["nesterov"] and sgd.defaults["weight_decay"] == 1e-4
    assert isinstance(make_optimizer(params, TrainSpec(optimizer="adamw")), torch.optim.AdamW)
    with pytest.raises(ValueError, match="nesterov needs optimizer: sgd and momentum > 0"):
        TrainSpec(optimizer="adam", nesterov=True)
