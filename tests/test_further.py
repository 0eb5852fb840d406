"""Issue 6, training side: schedules, optimizers, activations, batched augmentation, label smoothing,
early stopping, test-time flip, resume with augmentation, and trial ids left unchanged."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
import torch.nn.functional as F
from conftest import OPTS, tiny_config

from fmlab.config.schema import Config, ConfigError, DataConfig, TrainConfig, with_overrides
from fmlab.data import augment as aug
from fmlab.data.idx import normalize
from fmlab.model.nets import build
from fmlab.training import layout as ftrain  # train() validates through layout.evaluate (Single.validate)
from fmlab.training.loop import LoopState, evaluate, lr_at, make_optimizer, smoothed_nll, track, train

BASELINE_ID = "a9528b317040"  # Config().trial_id() before issue 6's fields existed


# ---------------------------------------------------------------- trial ids and config


def test_default_trial_id_unchanged():
    assert Config().trial_id() == BASELINE_ID


NEW_FIELDS = {
    "data.flip": 0.0,
    "data.translate_px": 0,
    "data.erase_p": 0.0,
    "data.erase_area_min": 0.02,
    "data.erase_area_max": 0.33,
    "data.noise_std": 0.0,
    "train.weight_decay": 0.0,
    "train.momentum": 0.9,
    "train.nesterov": False,
    "train.schedule": "constant",
    "train.warmup_epochs": 0.0,
    "train.lr_min": 0.0,
    "train.step_every": 10,
    "train.step_gamma": 0.1,
    "train.label_smoothing": 0.0,
    "train.tta": False,
    "model.depth": 1,
}


def test_new_fields_at_defaults_keep_the_id():
    assert with_overrides(Config(), {k: str(v) for k, v in NEW_FIELDS.items()}).trial_id() == BASELINE_ID


@pytest.mark.parametrize(
    "key,value",
    [
        ("data.flip", "0.5"),
        ("train.schedule", "cosine"),
        ("train.tta", "true"),
        ("train.optimizer", "sgd"),
        ("train.label_smoothing", "0.1"),
    ],
)
def test_a_new_field_set_changes_the_id(key, value):
    assert with_overrides(Config(), {key: value}).trial_id() != BASELINE_ID


def test_unused_fields_do_not_split_equal_experiments():
    # momentum is sgd's; step_every is the step schedule's; erase area needs erase_p > 0
    same = with_overrides(Config(), {"train.momentum": 0.5, "train.step_every": 3, "data.erase_area_max": 0.2})
    assert same.trial_id() == BASELINE_ID
    sgd = {"train.optimizer": "sgd"}
    assert (
        with_overrides(Config(), {**sgd, "train.momentum": 0.5}).trial_id() != with_overrides(Config(), sgd).trial_id()
    )


@pytest.mark.parametrize(
    "sets,msg",
    [
        ({"train.schedule": "exp"}, "'constant', 'step', 'cosine', 'linear', 'onecycle'"),
        ({"train.optimizer": "rmsprop"}, "'adam', 'adamw', 'sgd'"),
        ({"data.flip": "1.5"}, "allowed range"),
        ({"train.schedule": "cosine", "train.lr_min": "0.01"}, "exceeds train.lr"),
        ({"data.erase_area_min": "0.5", "data.erase_area_max": "0.4"}, "exceeds data.erase_area_max"),
        ({"train.optimizer": "sgd", "train.nesterov": "true", "train.momentum": "0"}, "momentum > 0"),
    ],
)
def test_bad_values_are_rejected(sets, msg):
    with pytest.raises(ConfigError, match=msg):
        with_overrides(Config(), sets)


# ---------------------------------------------------------------- schedules (hand-computed values)

SPE = 10  # steps per epoch; max_epochs 10 -> 100 steps


def tcfg(**kw) -> TrainConfig:
    return dataclasses.replace(TrainConfig(), lr=0.1, max_epochs=10, **kw)


@pytest.mark.parametrize(
    "kw,expect",
    [
        ({}, {0: 0.1, 57: 0.1, 99: 0.1}),
        ({"warmup_epochs": 0.5}, {0: 0.02, 1: 0.04, 4: 0.1, 5: 0.1, 99: 0.1}),
        (
            {"schedule": "step", "step_every": 3, "step_gamma": 0.5},
            {0: 0.1, 29: 0.1, 30: 0.05, 59: 0.05, 60: 0.025, 99: 0.0125},
        ),
        (
            {"schedule": "cosine", "lr_min": 0.01},
            {
                0: 0.1,
                25: 0.01 + 0.045 * (1 + math.sqrt(0.5)),
                50: 0.055,
                75: 0.01 + 0.045 * (1 - math.sqrt(0.5)),
                100: 0.01,
            },
        ),
        ({"schedule": "cosine", "warmup_epochs": 2}, {0: 0.005, 9: 0.05, 19: 0.1, 20: 0.1, 60: 0.05, 100: 0.0}),
        ({"schedule": "linear", "warmup_epochs": 2}, {0: 0.005, 19: 0.1, 20: 0.1, 40: 0.075, 60: 0.05, 90: 0.0125}),
        ({"schedule": "linear", "lr_min": 0.02}, {0: 0.1, 50: 0.06, 100: 0.02}),
        ({"schedule": "onecycle"}, {0: 0.004, 15: 0.052, 30: 0.1, 65: 0.05, 100: 0.0}),
        ({"schedule": "onecycle", "warmup_epochs": 1, "lr_min": 0.001}, {0: 0.004, 5: 0.052, 10: 0.1, 55: 0.0505}),
    ],
)
def test_lr_at_hand_computed(kw, expect):
    c = tcfg(**kw)
    for step, want in expect.items():
        assert lr_at(step, c, SPE) == pytest.approx(want, abs=1e-12), (kw, step)


# ---------------------------------------------------------------- augmentation


def batch(n: int = 32, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, 1, 28, 28, generator=torch.Generator().manual_seed(seed))


def g(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def shifted(img: torch.Tensor, dy: int, dx: int, fill: float) -> torch.Tensor:
    """Reference: content moved down dy and right dx, uncovered pixels = fill (a slow loop)."""
    out = torch.full_like(img, fill)
    h, w = img.shape[-2:]
    for i in range(h):
        for j in range(w):
            if 0 <= i - dy < h and 0 <= j - dx < w:
                out[..., i, j] = img[..., i - dy, j - dx]
    return out


OPS = {
    "flip": lambda x, gen: aug.hflip(x, 0.5, gen),
    "translate": lambda x, gen: aug.translate(x, 3, gen, -1.0),
    "noise": lambda x, gen: aug.gaussian_noise(x, 0.3, gen),
    "erase": lambda x, gen: aug.random_erase(x, 0.5, (0.02, 0.33), gen, -1.0),
}


@pytest.mark.parametrize("name", OPS)
def test_augmentation_keeps_shape_dtype_input_and_is_seeded(name):
    x = batch()
    x0 = x.clone()
    a, b, c = OPS[name](x, g(1)), OPS[name](x, g(1)), OPS[name](x, g(2))
    assert a.shape == x.shape and a.dtype == x.dtype
    assert torch.equal(x, x0)  # the input (and so the labels' order) is untouched
    assert torch.equal(a, b) and not torch.equal(a, c) and not torch.equal(a, x)


def test_flip():
    x = batch(400)
    assert torch.equal(aug.hflip(x, 1.0, g()), x.flip(3))
    assert torch.equal(aug.hflip(x, 0.0, g()), x)
    y = aug.hflip(x, 0.5, g())
    mirrored = (y == x.flip(3)).flatten(1).all(1)
    assert ((y == x).flatten(1).all(1) | mirrored).all()
    assert 150 < mirrored.sum() < 250


def test_translate_shifts_content_within_range():
    x = batch(16)
    y = aug.translate(x, 2, g(), fill=-1.0)
    seen = set()
    for i in range(len(x)):
        shifts = [(dy, dx) for dy in range(-2, 3) for dx in range(-2, 3)]
        hits = [d for d in shifts if torch.equal(y[i], shifted(x[i], *d, -1.0))]
        assert len(hits) == 1, i
        seen.add(hits[0])
    assert len(seen) > 5
    assert torch.equal(aug.translate(x, 0, g()), x)


def test_noise_has_the_set_std():
    x = batch(64)
    d = aug.gaussian_noise(x, 0.25, g()) - x
    assert d.std().item() == pytest.approx(0.25, rel=0.02) and abs(d.mean().item()) < 0.01
    # through the config: std in pixel units, so in normalised units it is noise_std / std
    cfg = DataConfig(noise_std=0.1)
    d = aug.augment(x, cfg, g()) - x
    assert (d * cfg.std).std().item() == pytest.approx(0.1, rel=0.02)


@pytest.mark.parametrize("area", [(0.02, 0.33), (0.1, 0.12), (0.5, 0.9)])
def test_erase_blanks_one_rectangle_of_the_set_area(area):
    x = torch.ones(300, 1, 28, 28)
    y = aug.random_erase(x, 1.0, area, g(), fill=0.0)
    for img in y[:, 0]:
        rows, cols = (img == 0).any(1).nonzero(), (img == 0).any(0).nonzero()
        h, w = len(rows), len(cols)
        assert rows.max() - rows.min() + 1 == h and cols.max() - cols.min() + 1 == w  # contiguous
        assert (img == 0).sum() == h * w  # the whole box, nothing else
        assert area[0] <= h * w / 784 <= area[1]
    assert torch.equal(aug.random_erase(x, 0.0, area, g()), x)
    half = aug.random_erase(x, 0.5, area, g(), fill=0.0)
    assert 110 < (half == 0).flatten(1).any(1).sum() < 190


def test_augment_fills_with_the_background_and_is_off_by_default():
    x = batch()
    assert not aug.enabled(DataConfig()) and torch.equal(aug.augment(x, DataConfig(), g()), x)
    cfg = DataConfig(erase_p=1.0, translate_px=4)
    y = aug.augment(torch.full_like(x, 5.0), cfg, g())
    bg = (0 - cfg.mean) / cfg.std
    assert sorted(torch.unique(y).tolist()) == [pytest.approx(bg), 5.0]
    pixels = normalize(torch.zeros(1, 28, 28, dtype=torch.uint8), cfg.mean, cfg.std)
    assert torch.allclose(pixels, torch.tensor(bg))


# ---------------------------------------------------------------- loss, optimizers, activations


def test_label_smoothing_by_hand():
    logp = torch.log(torch.tensor([[0.7, 0.2, 0.1], [0.25, 0.25, 0.5]]))
    y = torch.tensor([0, 2])
    eps = 0.3
    per = [
        (1 - eps) * -math.log(0.7) + eps * -(math.log(0.7) + math.log(0.2) + math.log(0.1)) / 3,
        (1 - eps) * -math.log(0.5) + eps * -(2 * math.log(0.25) + math.log(0.5)) / 3,
    ]
    assert smoothed_nll(logp, y, eps).item() == pytest.approx(sum(per) / 2, rel=1e-6)
    assert smoothed_nll(logp, y, 0.0).item() == pytest.approx(-(math.log(0.7) + math.log(0.5)) / 2, rel=1e-6)
    # torch's own label smoothing on logits is the same quantity (log_softmax of log-probs is a no-op)
    assert smoothed_nll(logp, y, eps).item() == pytest.approx(F.cross_entropy(logp, y, label_smoothing=eps).item())


def loss_falls(model_sets: dict, train_sets: dict, tiny_ds, steps: int = 40) -> tuple[float, float]:
    """First and last loss of `steps` full-batch steps on 128 images (dropout off: less noise)."""
    cfg = tiny_config(**{"model.dropout": "0", "train.lr": "0.005", **model_sets, **train_sets})
    torch.set_num_threads(OPTS.threads)
    torch.manual_seed(0)
    net = build(cfg.model)
    opt = make_optimizer(net.parameters(), cfg.train)
    x = normalize(tiny_ds.train.x[:128], cfg.data.mean, cfg.data.std)
    y = tiny_ds.train.y[:128]
    losses = []
    for _ in range(steps):
        loss = F.nll_loss(net(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses[0], losses[-1]


@pytest.mark.parametrize(
    "sets",
    [
        {"train.optimizer": "adam"},
        {"train.optimizer": "adam", "train.weight_decay": "1e-3"},
        {"train.optimizer": "adamw", "train.weight_decay": "0.05"},
        {"train.optimizer": "sgd", "train.lr": "0.02"},
        {"train.optimizer": "sgd", "train.lr": "0.02", "train.nesterov": "true", "train.weight_decay": "5e-4"},
        {"train.optimizer": "sgd", "train.lr": "0.1", "train.momentum": "0"},
    ],
)
def test_each_optimizer_lowers_the_loss(sets, tiny_ds):
    first, last = loss_falls({}, sets, tiny_ds)
    assert last < 0.85 * first


def test_make_optimizer_settings():
    p = [torch.nn.Parameter(torch.zeros(2))]
    sgd = make_optimizer(p, TrainConfig(optimizer="sgd", momentum=0.8, nesterov=True, weight_decay=0.01))
    assert isinstance(sgd, torch.optim.SGD)
    assert sgd.defaults["momentum"] == 0.8 and sgd.defaults["nesterov"] and sgd.defaults["weight_decay"] == 0.01
    assert type(make_optimizer(p, TrainConfig(optimizer="adamw"))) is torch.optim.AdamW
    assert type(make_optimizer(p, TrainConfig())) is torch.optim.Adam


@pytest.mark.parametrize(
    "sets",
    [
        {"model.activation": "relu"},
        {"model.activation": "leaky_relu", "model.kernel_size": "5"},
        {"model.activation": "prelu", "model.batch_norm": "true"},
        {"model.activation": "gelu", "model.batch_norm": "true", "model.conv_bias": "true"},
        {"model.batch_norm": "true", "model.conv_bias": "false", "model.kernel_size": "5", "model.pool": "max"},
        {"model.batch_norm": "false", "model.conv_bias": "false", "model.widths": "4,8"},
    ],
)
def test_model_switches_build_and_train(sets, tiny_ds):
    cfg = tiny_config(**sets).resolved()
    net = build(cfg.model)
    convs = [m for m in net.modules() if isinstance(m, torch.nn.Conv2d)]
    assert len(convs) == len(cfg.model.widths)
    assert all((c.bias is not None) == cfg.model.conv_bias for c in convs)
    assert all(c.kernel_size == (cfg.model.kernel_size,) * 2 for c in convs)
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in net.modules()) == cfg.model.batch_norm
    act = {"relu": torch.nn.ReLU, "leaky_relu": torch.nn.LeakyReLU, "prelu": torch.nn.PReLU, "gelu": torch.nn.GELU}
    assert sum(isinstance(m, act[cfg.model.activation]) for m in net.modules()) == len(cfg.model.widths)
    first, last = loss_falls(sets, {}, tiny_ds)
    assert last < 0.85 * first


# ---------------------------------------------------------------- early stopping and TTA


ACC = [0.50, 0.60, 0.60, 0.65, 0.64, 0.64, 0.659, 0.70, 0.71]  # min_delta 0.01, patience 3: stop at 7


def test_track_on_a_scripted_sequence():
    c = TrainConfig(monitor="val_acc", patience=3, min_delta=0.01)
    st = LoopState()
    marks = []
    for epoch, acc in enumerate(ACC, 1):
        marks.append(track(st, epoch, acc, c))
        if st.bad_epochs >= c.patience:
            break
    assert epoch == 7 and st.best_epoch == 4 and st.best == 0.65
    assert marks == [True, True, False, True, False, False, False]
    loss = TrainConfig(monitor="val_loss", patience=2)
    st = LoopState()
    assert [track(st, e, v, loss) for e, v in enumerate([1.0, 0.9, 0.9, 0.95], 1)] == [True, True, False, False]


def test_train_stops_on_accuracy_at_the_right_epoch(tiny_ds, monkeypatch):
    scripted = iter(ACC)
    real = ftrain.evaluate

    def fake(net, x, y, *a, **kw):
        r = real(net, x, y, *a, **kw)
        return r if len(y) == len(tiny_ds.test) else {"loss": r["loss"], "acc": next(scripted)}

    monkeypatch.setattr(ftrain, "evaluate", fake)
    cfg = tiny_config(
        **{"train.max_epochs": 20, "train.monitor": "val_acc", "train.patience": 3, "train.min_delta": 0.01}
    )
    r = train(cfg, tiny_ds, OPTS)
    assert len(r.epochs) == 7 and r.best_epoch == 4 and r.stop_reason == "early_stopping"
    assert r.metrics["val_acc"] == 0.65


def test_tta_is_mirror_invariant_and_plain_on_symmetric_images(tiny_ds):
    torch.manual_seed(0)
    net = build(tiny_config().model)
    x = normalize(tiny_ds.val.x[:100], 0.286, 0.353)
    y = tiny_ds.val.y[:100]
    a, b = evaluate(net, x, y, 32, tta=True), evaluate(net, x.flip(3), y, 32, tta=True)
    assert a["loss"] == pytest.approx(b["loss"], rel=1e-5) and a["acc"] == b["acc"]
    sym = (x + x.flip(3)) / 2
    assert evaluate(net, sym, y, tta=True)["loss"] == pytest.approx(evaluate(net, sym, y)["loss"], rel=1e-5)
    assert a["loss"] != pytest.approx(evaluate(net, x, y)["loss"], rel=1e-5)


# ---------------------------------------------------------------- train() end to end, resume


EVERYTHING = {
    "train.optimizer": "sgd",
    "train.lr": "0.05",
    "train.nesterov": "true",
    "train.weight_decay": "5e-4",
    "train.schedule": "cosine",
    "train.warmup_epochs": "0.5",
    "train.lr_min": "0.001",
    "train.label_smoothing": "0.1",
    "train.tta": "true",
    "train.max_epochs": "2",
    "data.flip": "0.5",
    "data.translate_px": "2",
    "data.erase_p": "0.5",
    "data.noise_std": "0.05",
}


class Stop(Exception):
    pass


def test_all_features_train_and_resume_matches_uninterrupted(tiny_ds, tmp_path):
    cfg = tiny_config(**EVERYTHING)
    full = train(cfg, tiny_ds, OPTS)
    assert len(full.epochs) == 2 and all(math.isfinite(r["val_loss"]) for r in full.epochs)
    spe = math.ceil(len(tiny_ds.train) / cfg.train.batch_size)
    assert full.epochs[-1]["lr"] == pytest.approx(lr_at(2 * spe - 1, cfg.train, spe))

    def stop_after_first(row):
        raise Stop

    with pytest.raises(Stop):
        train(cfg, tiny_ds, OPTS, state_dir=tmp_path, on_epoch=stop_after_first)
    resumed = train(cfg, tiny_ds, OPTS, state_dir=tmp_path)
    assert resumed.epochs[-1]["val_loss"] == full.epochs[-1]["val_loss"]
    assert resumed.metrics == full.metrics
    assert all((resumed.weights[k] == full.weights[k]).all() for k in full.weights)


def test_augmentation_leaves_the_batch_order_alone(tiny_ds):
    # its own generator: with augmentation on, the shuffle (and dropout) streams are the same
    a = train(tiny_config(), tiny_ds, OPTS)
    b = train(tiny_config(**{"data.noise_std": "1e-7"}), tiny_ds, OPTS)
    assert a.epochs[0]["train_loss"] == pytest.approx(b.epochs[0]["train_loss"], rel=1e-5)
    assert a.epochs[0]["val_loss"] == pytest.approx(b.epochs[0]["val_loss"], rel=1e-5)


def test_new_fields_round_trip_through_a_checkpoint(tmp_path, tiny_result):
    from fmlab.config.schema import from_dict
    from fmlab.training import checkpoint

    c = tiny_config(**EVERYTHING).resolved()
    assert from_dict(c.to_dict()) == c
    res = dataclasses.replace(tiny_result, config=c.to_dict(), trial_id=c.trial_id())
    cfg, _, _ = checkpoint.load_trial(checkpoint.save_trial(res, tmp_path / "t"))
    assert cfg == c and cfg.trial_id() == c.trial_id()
