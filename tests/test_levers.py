"""The training levers of issue 33 (EMA of the weights, alternating flip, multi-view TTA, mixup and cutmix):
each one's mechanics on a toy, off by default (trial ids unchanged), refused where it makes no sense, and a
tiny real-data run with each on that trains in both loops and resumes as if never cut."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import OPTS, tiny_config

from fmlab.config.schema import Config, ConfigError, from_dict, trial_id, with_overrides
from fmlab.data import augment as faug
from fmlab.model.nets import build
from fmlab.model.packed import member_losses
from fmlab.training import mix, packed, step
from fmlab.training.ema import Average, decay_at
from fmlab.training.evaluation import Views, view_logp
from fmlab.training.layout import Single, evaluate
from fmlab.training.loop import train

LEVERS = {
    "ema": {"train.ema": 0.9, "train.ema_every": 2, "model.batch_norm": True},
    "alternate": {"data.flip": 0.5, "data.flip_mode": "alternate"},
    "tta_shifts": {"train.tta_shifts": 1},  # 3 views (with train.tta 6: the unit tests cover those)
    "mixup": {"data.mixup": 0.4, "train.label_smoothing": 0.1},
    "cutmix": {"data.cutmix": 1.0},
}


# ---------------------------------------------------------------- config


def test_every_lever_is_off_by_default_and_leaves_trial_ids_alone():
    c = Config()
    assert (c.train.ema, c.train.tta_shifts, c.data.flip_mode, c.data.mixup, c.data.cutmix) == (0, 0, "random", 0, 0)
    assert trial_id(c) == "a9528b317040"  # pinned in test_config.py too
    assert trial_id(with_overrides(c, {"train.ema_every": 5})) == trial_id(c)  # unused without train.ema
    for overrides in LEVERS.values():
        assert trial_id(with_overrides(c, overrides)) != trial_id(c)


def test_a_record_leaves_the_levers_out_at_their_neutral_values_and_reads_back():
    """The store, trial.json and trials.csv keep Config.to_record: the committed results' configs stay
    byte-identical while the levers are off; a lever that is on is recorded."""
    c = Config()
    rec = c.to_record()
    assert "ema" not in rec["train"] and "mixup" not in rec["data"] and "tta" in rec["train"]
    assert from_dict(rec) == c and from_dict(c.to_dict()) == c
    on = with_overrides(c, LEVERS["mixup"])
    assert on.to_record()["data"]["mixup"] == 0.4 and from_dict(on.to_record()) == on


@pytest.mark.parametrize(
    "overrides,named",
    [
        ({"data.flip_mode": "alternate"}, "data.flip=0.5"),
        ({"data.flip_mode": "alternate", "data.flip": 1.0}, "data.flip=0.5"),
        ({"data.mixup": 0.2, "data.cutmix": 1.0}, "choose one"),
        ({"train.ema": 1.0}, "train.ema"),
        ({"train.tta_shifts": 9}, "train.tta_shifts"),
    ],
)
def test_settings_that_make_no_sense_are_refused_in_one_line(overrides, named):
    with pytest.raises(ConfigError) as e:
        with_overrides(Config(), overrides)
    assert named in str(e.value) and "\n" not in str(e.value)


# ---------------------------------------------------------------- EMA


class Toy(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(3))
        self.bn = torch.nn.BatchNorm1d(3)


def test_ema_weights_and_bn_statistics_equal_the_closed_form_average():
    """After G steps with an update every 2, the average is prod(d) * start + sum_n (1 - d_n) prod_{m>n} d_m
    * live_n over the updates n, d_n = decay_at(n): for the weights and BN's running statistics alike; the
    batch count is the live one."""
    net, decay, every, steps = Toy(), 0.8, 2, 9
    start = {k: v.clone() for k, v in net.state_dict().items()}
    avg = Average(net, start, decay, every)
    seen = []  # the live weights at each update
    for g in range(steps):
        with torch.no_grad():
            net.w.copy_(torch.tensor([g, g**2, -g], dtype=torch.float32))
            net.bn.running_mean.fill_(0.5 * g)
            net.bn.num_batches_tracked.fill_(g)
        avg.after_step(g)
        if (g + 1) % every == 0:
            seen.append((net.w.detach().clone(), net.bn.running_mean.clone()))
    ds = [decay_at(n, decay) for n in range(len(seen))]
    assert ds[0] == pytest.approx(1 / 10) and ds[-1] == pytest.approx(min(decay, 4 / 13))
    want_w, want_mean = math.prod(ds) * start["w"], math.prod(ds) * start["bn.running_mean"]
    for n, (w, m) in enumerate(seen):
        share = (1 - ds[n]) * math.prod(ds[n + 1 :])
        want_w, want_mean = want_w + share * w, want_mean + share * m
    got = avg.net.state_dict()
    assert torch.allclose(got["w"], want_w, atol=1e-5) and torch.allclose(got["bn.running_mean"], want_mean, atol=1e-6)
    assert got["bn.num_batches_tracked"] == 7  # the live count at the last update (g = 7), not the latest (8)
    assert not torch.equal(got["w"], net.w.detach())
    assert decay_at(10_000, 0.999) == 0.999  # the warm-up ends at the decay asked for


def test_with_ema_the_checkpoint_holds_the_average_and_validates_with_it(tiny_ds):
    cfg = tiny_config(**LEVERS["ema"], **{"train.max_epochs": 2})
    r = train(cfg, tiny_ds, OPTS)
    plain = train(tiny_config(**{"model.batch_norm": True, "train.max_epochs": 2}), tiny_ds, OPTS)
    assert [e["train_loss"] for e in r.epochs] == [e["train_loss"] for e in plain.epochs]  # training is untouched
    assert [e["val_loss"] for e in r.epochs] != [e["val_loss"] for e in plain.epochs]  # validation is the average's
    net = build(cfg.resolved().model)
    net.load_state_dict({k: torch.from_numpy(v) for k, v in r.weights.items()})
    x, y = step.prepare(tiny_ds.val, tiny_ds, torch.device("cpu"), torch.contiguous_format)
    assert evaluate(net, x, y)["loss"] == pytest.approx(r.metrics["val_loss"], abs=1e-6)


# ---------------------------------------------------------------- alternating flip


def test_alternating_flip_flips_each_image_in_exactly_every_other_epoch(tiny_ds, monkeypatch):
    """Through the loop: the flips each step passes to the augmentation, by image, over 4 epochs."""
    cfg = tiny_config(**LEVERS["alternate"], **{"train.max_epochs": 4})
    seen_idx, seen_flips = [], []
    real_step, real_aug = step.train_step, faug.augment

    def spy_step(run, lanes, idx, lr):
        seen_idx.append((lanes[0].st.epoch + 1, idx[0].clone()))
        return real_step(run, lanes, idx, lr)

    def spy_aug(x, dc, gen, flips=None):
        state = gen.get_state()
        out = real_aug(x, dc, gen, flips)
        assert torch.equal(gen.get_state(), state)  # nothing drawn: the flips are decided
        assert torch.equal(out, torch.where(flips[:, None, None, None], x.flip(3), x))
        seen_flips.append(flips.clone())
        return out

    monkeypatch.setattr(step, "train_step", spy_step)
    monkeypatch.setattr(faug, "augment", spy_aug)
    train(cfg, tiny_ds, OPTS)
    n = len(tiny_ds.train.y)
    by_epoch = torch.zeros(4, n, dtype=torch.long) - 1
    for (epoch, rows), flips in zip(seen_idx, seen_flips, strict=True):
        by_epoch[epoch - 1, rows] = flips.long()
    assert (by_epoch >= 0).all()  # every image seen once per epoch
    assert (
        (by_epoch[0] != by_epoch[1]).all() and (by_epoch[1] != by_epoch[2]).all() and (by_epoch[2] != by_epoch[3]).all()
    )
    assert by_epoch.sum(0).tolist() == [2] * n  # so each image is mirrored in exactly 2 of the 4
    assert 0.4 < by_epoch[0].float().mean() < 0.6  # epoch 1: a fair coin per image
    other = faug.alternate_bits(n, cfg.seed + 1, torch.device("cpu"))
    assert not torch.equal(other, by_epoch[0].bool()) and torch.equal(
        faug.alternate_bits(n, cfg.seed, torch.device("cpu")), by_epoch[0].bool()
    )


# ---------------------------------------------------------------- multi-view TTA


def shifted(x: torch.Tensor, dy: int, dx: int, fill: float) -> torch.Tensor:
    """x's content moved dy down, dx right, by explicit index ranges (independent of augment.shift)."""
    h, w = x.shape[-2:]
    out = torch.full_like(x, fill)
    out[..., max(dy, 0) : h + min(dy, 0), max(dx, 0) : w + min(dx, 0)] = x[
        ..., max(-dy, 0) : h - max(dy, 0), max(-dx, 0) : w - max(dx, 0)
    ]
    return out


class Known(torch.nn.Module):
    """A net that is a known function of the image: log_softmax(flatten(x) @ W)."""

    def __init__(self) -> None:
        super().__init__()
        self.W = torch.randn(28 * 28, 10, generator=torch.Generator().manual_seed(0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.log_softmax(x.flatten(1) @ self.W, dim=-1)


def test_the_tta_views_are_the_image_its_mirror_and_their_diagonal_shifts():
    x = torch.randn(5, 1, 28, 28, generator=torch.Generator().manual_seed(1))
    v = Views(flip=True, shift=2, fill=-0.8)
    want = [b2 for b in (x, x.flip(3)) for b2 in (b, shifted(b, -2, -2, -0.8), shifted(b, 2, 2, -0.8))]
    got = v.images(x)
    assert len(got) == 6 and all(torch.equal(a, b) for a, b in zip(got, want, strict=True))
    assert (
        torch.equal(faug.shift(x, 1, 0, 0.0)[:, :, 1:], x[:, :, :-1]) and (faug.shift(x, 1, 0, 0.0)[:, :, 0] == 0).all()
    )
    net = Known()
    mean_logp = torch.log_softmax(sum(net(b) for b in want) / 6, dim=-1)
    assert torch.allclose(view_logp(net, x, v), mean_logp, atol=1e-5)
    y = torch.arange(5)
    r = evaluate(net, x, y, 2, tta=v)
    assert r["loss"] == pytest.approx(F.nll_loss(mean_logp, y).item(), abs=1e-5)
    no_flip = torch.log_softmax(sum(net(b) for b in want[:3]) / 3, dim=-1)
    assert torch.allclose(view_logp(net, x, Views(shift=2, fill=-0.8)), no_flip, atol=1e-5)


def test_the_default_views_are_the_flip_tta_as_before():
    x, net = torch.randn(4, 1, 28, 28), Known()
    assert Views.of(Config()) == Views(False, 0, (0 - 0.2860) / 0.3530)
    assert Views.of(with_overrides(Config(), {"train.tta": True})).flip
    assert torch.equal(view_logp(net, x, Views()), net(x))
    old = torch.log_softmax((net(x) + net(x.flip(3))) / 2, dim=-1)  # the one TTA there was
    assert torch.equal(view_logp(net, x, Views(flip=True)), old)
    assert evaluate(net, x, torch.arange(4), tta=True) == evaluate(net, x, torch.arange(4), tta=Views(True))


# ---------------------------------------------------------------- mixup, cutmix


def test_mixup_blends_images_and_targets_by_the_sampled_lambda():
    dc = with_overrides(Config(), {"data.mixup": 0.4}).data
    x, y = torch.randn(16, 1, 28, 28), torch.arange(16) % 10
    gen, pgen = torch.Generator().manual_seed(3), torch.Generator().manual_seed(4)
    m = mix.mix_batch(x, y, dc, gen, pgen)
    perm = torch.randperm(16, generator=torch.Generator().manual_seed(4))
    lam = mix.beta(0.4, torch.Generator().manual_seed(3))
    assert m.lam == lam and 0 < lam < 1
    assert torch.allclose(m.x, lam * x + (1 - lam) * x[perm], atol=1e-6) and torch.equal(m.other, y[perm])
    draws = np.array([mix.beta(0.4, gen) for _ in range(4000)])  # Beta(a, a): mean 1/2, var 1/(4(2a+1))
    assert abs(draws.mean() - 0.5) < 0.02 and abs(draws.var() - 1 / (4 * 1.8)) < 0.01


def test_cutmix_pastes_one_box_and_lambda_is_the_share_left_uncovered():
    dc = with_overrides(Config(), {"data.cutmix": 1.0}).data
    x, y = torch.randn(16, 1, 28, 28), torch.arange(16) % 10
    for s in range(5):
        m = mix.mix_batch(x, y, dc, torch.Generator().manual_seed(s), torch.Generator().manual_seed(9))
        perm = torch.randperm(16, generator=torch.Generator().manual_seed(9))
        moved = perm != torch.arange(16)
        pasted = (m.x == x[perm]) & (m.x != x)  # random values: a pixel equals one image's or the other's
        assert ((m.x == x) | (m.x == x[perm])).all()
        box = pasted[moved].float().mean((0, 1))  # the same box in every image
        assert ((box == 0) | (box == 1)).all()
        rows, cols = box.any(1).nonzero().flatten(), box.any(0).nonzero().flatten()
        if len(rows):  # a rectangle
            assert box[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1].all()
        assert m.lam == pytest.approx(1 - box.mean().item()) and torch.equal(m.other, y[perm])


def test_the_mixed_loss_is_the_cross_entropy_against_blended_smoothed_targets():
    logp = torch.log_softmax(torch.randn(8, 10), dim=-1)
    y, other, lam, eps = torch.arange(8), (torch.arange(8) + 3) % 10, 0.3, 0.1
    target = lam * F.one_hot(y, 10) + (1 - lam) * F.one_hot(other, 10)
    want = -(((1 - eps) * target + eps / 10) * logp).sum(1).mean()
    got = mix.mixed_losses(Single(), logp, y, [mix.Mixed(torch.empty(0), other, lam)], eps)
    assert got.ndim == 0 and got.item() == pytest.approx(want.item(), abs=1e-6)

    class Two:  # the packed layout's losses: networks side by side, each its own lambda
        k = 2

        def losses(self, out, y, eps):
            return member_losses(out, y, eps)

        def targets(self, ys):
            return torch.stack(ys, 1)

    both = mix.mixed_losses(
        Two(), torch.stack([logp, logp], 1), torch.stack([y, y], 1), [mix.Mixed(None, other, lam)] * 2, eps
    )
    assert both.shape == (2,) and torch.allclose(both, want.expand(2), atol=1e-6)


# ---------------------------------------------------------------- real data: both loops, resume


@pytest.mark.parametrize("lever", sorted(LEVERS))
def test_a_tiny_run_with_the_lever_trains_in_both_loops_and_resumes_as_if_uncut(tiny_ds, tmp_path, lever):
    cfg = tiny_config(**LEVERS[lever], **{"train.max_epochs": 2})
    full = train(cfg, tiny_ds, OPTS)
    assert all(math.isfinite(e["train_loss"]) for e in full.epochs) and full.metrics["val_acc"] > 0.2
    train(with_overrides(cfg, {"train.max_epochs": 1}), tiny_ds, OPTS, state_dir=tmp_path)  # cut after epoch 1
    resumed = train(cfg, tiny_ds, OPTS, state_dir=tmp_path)
    drop = lambda r: [{k: v for k, v in e.items() if k != "epoch_s"} for e in r.epochs]  # noqa: E731
    assert drop(resumed) == drop(full) and resumed.metrics == full.metrics
    pack = packed.train_pack([cfg], tiny_ds, OPTS)[cfg.resolved().trial_id()]  # the packed loop, K = 1
    assert not isinstance(pack, BaseException), pack
    for a, b in zip(drop(pack), drop(full), strict=True):
        assert all(abs(a[k] - b[k]) <= 1e-5 for k in b), (a, b)
