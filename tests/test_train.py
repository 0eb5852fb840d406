import json

import numpy as np
import pytest
from conftest import OPTS, tiny_config

from fmlab.config.schema import with_overrides
from fmlab.data import idx as data
from fmlab.training.loop import evaluate, improved, train


def test_result_has_the_named_metrics(tiny_result):
    r = tiny_result
    assert set(r.metrics) == {"val_loss", "val_acc", "test_loss", "test_acc"}
    assert {"epoch", "train_loss", "train_acc", "val_loss", "val_acc", "epoch_s", "lr"} <= set(r.epochs[0])
    assert all(0 <= r.metrics[k] <= 1 for k in ("val_acc", "test_acc"))
    assert r.trial_id == tiny_config().trial_id()


def test_deterministic(tiny_ds, tiny_result):
    again = train(tiny_config(), tiny_ds, OPTS)
    assert again.epochs[0]["train_loss"] == tiny_result.epochs[0]["train_loss"]
    assert again.metrics == tiny_result.metrics
    for k, v in again.weights.items():
        assert np.array_equal(v, tiny_result.weights[k])
    other = train(tiny_config(seed=1), tiny_ds, OPTS)
    assert other.metrics != tiny_result.metrics


def test_early_stopping_rule():
    assert improved(0.5, None, "val_loss", 0.0)
    assert improved(0.49, 0.5, "val_loss", 0.0) and not improved(0.5, 0.5, "val_loss", 0.0)
    assert not improved(0.495, 0.5, "val_loss", 0.01)
    assert improved(0.91, 0.9, "val_acc", 0.0) and not improved(0.905, 0.9, "val_acc", 0.01)


def test_stops_after_patience_and_restores_the_best_epoch(tiny_ds):
    # lr so high that validation stops improving: it must stop after `patience` bad epochs
    cfg = tiny_config(**{"train.max_epochs": 12, "train.patience": 2, "train.lr": 0.05})
    r = train(cfg, tiny_ds, OPTS)
    losses = [e["val_loss"] for e in r.epochs]
    assert r.best_epoch == int(np.argmin(losses)) + 1
    if r.stop_reason == "early_stopping":
        assert len(r.epochs) == r.best_epoch + 2
    assert r.metrics["val_loss"] == min(losses)


def test_resume_from_state_matches_an_uninterrupted_run(tiny_ds, tmp_path):
    cfg = tiny_config(**{"train.max_epochs": 3})
    full = train(cfg, tiny_ds, OPTS)
    two = train(with_overrides(cfg, {"train.max_epochs": 2}), tiny_ds, OPTS, state_dir=tmp_path)
    assert len(two.epochs) == 2
    resumed = train(cfg, tiny_ds, OPTS, state_dir=tmp_path)  # picks up after epoch 2
    assert [e["val_loss"] for e in resumed.epochs] == [e["val_loss"] for e in full.epochs]
    assert resumed.metrics == full.metrics


def test_a_resumed_trials_total_time_spans_every_attempt(tiny_ds, tmp_path):
    """total_s counts the attempt cut off (through its last saved epoch) as train_s does, so a resumed
    trial never reports training seconds above its whole time."""
    cfg = tiny_config(**{"train.max_epochs": 3})
    first = train(with_overrides(cfg, {"train.max_epochs": 2}), tiny_ds, OPTS, state_dir=tmp_path)
    prior = json.loads((tmp_path / "state.json").read_text())["train"]["prior_s"]
    assert sum(e["epoch_s"] for e in first.epochs) <= prior <= first.timings["total_s"]
    resumed = train(cfg, tiny_ds, OPTS, state_dir=tmp_path)
    assert resumed.timings["total_s"] >= prior + resumed.epochs[-1]["epoch_s"]
    assert resumed.timings["train_s"] <= resumed.timings["total_s"]


def test_learns_on_real_data():
    """One epoch on a 10k real subset reaches >= 80% validation accuracy."""
    cfg = with_overrides(
        tiny_config(),
        {"model.widths": "32,64,64", "model.batch_norm": True, "data.train_subset": 10_000, "data.val_size": 5000},
    )
    r = train(cfg, data.load(cfg.data), OPTS.__class__(device="cpu"))
    assert r.metrics["val_acc"] >= 0.80, r.metrics


def test_evaluate_counts_correctly():
    import torch

    class Fixed(torch.nn.Module):
        def forward(self, x):
            return torch.log_softmax(x.flatten(1)[:, :3], 1)

    x = torch.tensor([[5.0, 0, 0], [0, 5, 0], [0, 0, 5], [5, 0, 0]]).reshape(4, 1, 1, 3)
    y = torch.tensor([0, 1, 2, 2])
    m = evaluate(Fixed(), x, y, batch_size=3)
    assert m["acc"] == pytest.approx(0.75)
