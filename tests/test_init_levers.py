"""The initialisation and BatchNorm levers (fmlab.model.inits, fmlab.training.optim): whitening of the first
conv, identity (dirac) convs, BatchNorm scales frozen at one with a learning-rate multiplier for the biases,
the airbench-style net, and count_params counting frozen parameters. Mechanics on toys and tiny real data."""

from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn.functional as F
from conftest import OPTS, TINY
from torch import nn

from fmlab.config.schema import Config, ConfigError, TrainConfig, from_dict, hash_dict, with_overrides
from fmlab.data import idx as data
from fmlab.model import inits
from fmlab.model.nets import build, count_params
from fmlab.model.packed import PackedNet, stack
from fmlab.training import packed, step
from fmlab.training.layout import Single
from fmlab.training.loop import train
from fmlab.training.optim import bn_names, frozen_names, lr_at, make_optimizer, set_trainable

WHITE = {"model.widths": "18,16,16", "model.whiten": "frozen"}  # 2 x 3 x 3 channels: a whitenable first conv
AIR = {"model.arch": "airbench", "model.batch_norm": True, "model.widths": "8,16", "model.dropout": 0.0}


def cfg_of(**kw) -> Config:
    return with_overrides(Config(), {**TINY, **kw})


def patches(x: torch.Tensor, k: int) -> torch.Tensor:
    return F.unfold(x, k).transpose(1, 2).reshape(-1, x.shape[1] * k * k)


def test_whitened_first_layer_outputs_have_identity_covariance_on_training_patches(tiny_ds):
    cfg = cfg_of(**WHITE)
    _, net = step.start_lane(cfg, torch.device("cpu"), None, ds=tiny_ds)
    conv = net.features[0]
    p = patches(data.normalize(tiny_ds.train.x, tiny_ds.mean, tiny_ds.std), 3)  # every training patch
    out = p @ conv.weight.flatten(1).T.detach() + conv.bias.detach()
    assert out.shape[1] == 18
    cov = torch.cov(out[:, :9].T)
    assert torch.allclose(cov, torch.eye(9), atol=0.1), cov  # eps = 5e-4 shrinks only the faintest directions
    assert out[:, :9].mean(0).abs().max() < 0.05  # the bias centres them
    assert torch.equal(conv.weight[9:], -conv.weight[:9])  # the other half: the same filters negated
    # without eps, the whitening of a covariance is exact
    w = inits.whitening(torch.cov(p.double().T), eps=0.0)
    assert torch.allclose(w @ torch.cov(p.double().T) @ w.T, torch.eye(9, dtype=torch.float64), atol=1e-6)


def test_whitening_reads_training_images_only_and_is_deterministic_per_seed(tiny_ds):
    blank = data.Split(torch.zeros_like(tiny_ds.val.x), tiny_ds.val.y)
    no_val = dataclasses.replace(tiny_ds, val=blank, test=data.Split(torch.zeros_like(tiny_ds.test.x), tiny_ds.test.y))
    cpu = torch.device("cpu")
    a = step.start_lane(cfg_of(**WHITE), cpu, None, ds=tiny_ds)[1].features[0].weight
    b = step.start_lane(cfg_of(**WHITE), cpu, None, ds=no_val)[1].features[0].weight
    assert torch.equal(a, b)  # validation and test images play no part
    # the sample (all 600 training images here, under WHITEN_IMAGES) is the seed's draw of training rows
    one, again, other = (inits.train_sample(tiny_ds, s, n=100) for s in (0, 0, 1))
    assert torch.equal(one, again) and not torch.equal(one, other)
    train_x = data.normalize(tiny_ds.train.x, tiny_ds.mean, tiny_ds.std)
    assert all((train_x == img).all((1, 2, 3)).any() for img in one)


def test_whitening_leaves_the_global_stream_alone(tiny_ds):
    """The other init draws (and the dropout stream after them) are the plain run's."""
    cpu = torch.device("cpu")
    plain = step.start_lane(cfg_of(**{"model.widths": "18,16,16"}), cpu, None, ds=tiny_ds)[1]
    after = torch.get_rng_state()
    white = step.start_lane(cfg_of(**WHITE), cpu, None, ds=tiny_ds)[1]
    assert torch.equal(torch.get_rng_state(), after)
    assert torch.equal(plain.features[3].weight, white.features[3].weight)


@pytest.mark.parametrize(
    ("over", "words"),
    [
        ({"model.whiten": "frozen"}, "needs a first conv of 2 x kernel_size^2 = 18"),
        ({"model.whiten": "trained", "model.kernel_size": 5, "model.widths": "18,16"}, "= 50"),
        ({**WHITE, "model.whiten": "trained", "model.whiten_epochs": 2}, "model.whiten=frozen only"),
        ({"model.bn_weight_frozen": True}, "model.bn_weight_frozen needs model.batch_norm=true"),
        ({"train.bn_bias_lr_mult": 64}, "train.bn_bias_lr_mult needs model.batch_norm=true"),
        ({"model.arch": "airbench"}, "model.arch=airbench needs model.batch_norm=true"),
    ],
)
def test_levers_that_do_not_fit_the_network_are_refused(over, words):
    with pytest.raises(ConfigError, match=words.replace("^", r"\^").replace("+", r"\+")):
        cfg_of(**over)
    with_overrides(Config(), {**AIR, "model.whiten": "frozen"})  # airbench's own whitening conv always fits


def test_new_keys_at_their_defaults_leave_trial_ids_alone():
    h = hash_dict(Config())
    assert not {"whiten", "whiten_epochs", "dirac_init", "bn_weight_frozen"} & h["model"].keys()
    assert "bn_bias_lr_mult" not in h["train"]
    assert Config().trial_id() != with_overrides(Config(), {"model.dirac_init": True}).trial_id()


def test_a_dirac_initialised_c_to_c_conv_is_the_identity():
    torch.manual_seed(0)
    net = build(with_overrides(Config(), {**AIR, "model.dirac_init": True}).model)
    inits.apply(net, with_overrides(Config(), {**AIR, "model.dirac_init": True}).model, 0, None)
    convs = [m for m in net.modules() if isinstance(m, nn.Conv2d)]
    same = [m for m in convs if m.in_channels == m.out_channels]
    wider = [m for m in convs if m.out_channels > m.in_channels]
    assert same and wider
    x = torch.randn(2, same[0].in_channels, 7, 7)
    with torch.no_grad():
        assert torch.allclose(same[0](x), x)  # the identity
        z = torch.randn(2, wider[-1].in_channels, 7, 7)
        assert torch.allclose(wider[-1](z)[:, : z.shape[1]], z)  # its first `in` filters pass their inputs
        assert not torch.allclose(wider[-1](z)[:, z.shape[1] :], torch.zeros(()))  # the rest stay random


def test_bn_bias_groups_follow_the_schedule_with_their_multiplier(tiny_ds):
    cfg = cfg_of(
        **{"model.batch_norm": True, "train.bn_bias_lr_mult": 64, "train.weight_decay": 0.01},
        **{"train.schedule": "cosine", "train.optimizer": "sgd", "train.max_epochs": 3},
    )
    net = build(cfg.model)
    opt = make_optimizer(net, cfg.train)
    rest, biases = opt.param_groups
    named = {id(p): n for n, p in net.named_parameters()}
    assert {named[id(p)] for p in biases["params"]} == bn_names(net)[1] == {f"features.{i}.bias" for i in (1, 5, 9)}
    assert len(rest["params"]) + len(biases["params"]) == len(list(net.parameters()))
    assert biases["weight_decay"] * 64 == rest["weight_decay"] == 0.01  # the same decay per step
    run = step.Run(
        net, opt, Single(), cfg, step.Data.of(tiny_ds, torch.device("cpu"), torch.contiguous_format), nullctx, 256
    )
    lane = step.start_lane(cfg, torch.device("cpu"), None, ds=tiny_ds)[0]
    for s in (0, 7, 20):
        lr = lr_at(s, cfg.train, 10)
        step.train_step(run, [lane], [torch.arange(64)], lr)
        assert rest["lr"] == lr and biases["lr"] == pytest.approx(64 * lr)
    assert (
        make_optimizer(net, TrainConfig()).param_groups[0].keys()
        == torch.optim.Adam(net.parameters()).param_groups[0].keys()
    )


def nullctx():
    return torch.autocast("cpu", enabled=False)


def test_frozen_weights_do_not_move_and_the_whitening_thaws_after_its_epochs(tiny_ds, tmp_path):
    levers = {"model.batch_norm": True, "model.bn_weight_frozen": True, "train.bn_bias_lr_mult": 8}
    cfg = cfg_of(**WHITE, **levers, **{"model.whiten_epochs": 1, "train.max_epochs": 2})
    one = train(with_overrides(cfg, {"train.max_epochs": 1}), tiny_ds, OPTS, state_dir=tmp_path)
    _, init = step.start_lane(cfg, torch.device("cpu"), None, ds=tiny_ds)
    w = {k: torch.from_numpy(v) for k, v in one.weights.items()}
    bn_w, bn_b = bn_names(init)
    assert bn_w and all(torch.equal(w[n], torch.ones_like(w[n])) for n in bn_w)  # fixed at one
    assert all(not torch.equal(w[n], init.state_dict()[n]) for n in bn_b)  # the biases train
    assert torch.equal(w["features.0.weight"], init.features[0].weight)  # frozen in epoch 1
    assert frozen_names(init, cfg.model, 1) == bn_w | {"features.0.weight"}
    assert frozen_names(init, cfg.model, 2) == bn_w  # thawed after whiten_epochs
    two = train(cfg, tiny_ds, OPTS, state_dir=tmp_path)  # resumed: epoch 2 trains the first conv
    assert not torch.equal(torch.from_numpy(two.weights["features.0.weight"]), init.features[0].weight)
    uncut = train(cfg, tiny_ds, OPTS)
    assert [e["val_loss"] for e in two.epochs] == [e["val_loss"] for e in uncut.epochs]


def test_set_trainable_leaves_a_network_without_frozen_levers_untouched():
    net = build(Config().model)
    net.fc.weight.requires_grad_(False)  # a marker: set_trainable must not reset it
    set_trainable(net, Config().model, 1)
    assert not net.fc.weight.requires_grad


def test_count_params_counts_frozen_parameters():
    net = build(with_overrides(Config(), {**AIR, "model.bn_weight_frozen": True}).model)
    before = count_params(net)
    for p in net.parameters():
        p.requires_grad_(False)
    assert count_params(net) == before == sum(p.numel() for p in net.parameters())


def airbench_count(widths, depth, k=3) -> int:
    """Independent count: whitening conv 2x2 (1->8, bias), per width a kxk conv in->w, depth kxk w->w,
    each conv's BatchNorm (scale and shift), a bias-free linear w_last->10."""
    n, c = 8 * 4 + 8, 8
    for w in widths:
        n += c * w * k * k + depth * w * w * k * k + (1 + depth) * 2 * w
        c = w
    return n + c * 10


def test_airbench_net_shape_and_parameter_count():
    for widths, depth in (((64, 128, 256), 1), ((32, 48), 2)):
        cfg = with_overrides(Config(), {**AIR, "model.widths": widths, "model.depth": depth})
        net = build(cfg.model)
        assert count_params(net) == airbench_count(widths, depth)
        assert net(torch.zeros(3, 1, 28, 28)).shape == (3, 10)
    assert airbench_count((64, 128, 256), 1) == 1_151_784


def test_airbench_net_packs_as_it_runs_alone():
    torch.manual_seed(0)
    net = build(with_overrides(Config(), {**AIR, "model.pool": "max", "model.activation": "gelu"}).model).eval()
    other = build(with_overrides(Config(), {**AIR, "model.pool": "max", "model.activation": "gelu"}).model).eval()
    pnet = PackedNet(net, 2, [0.0, 0.0], [torch.Generator(), torch.Generator()]).eval()
    pnet.load_state_dict(stack([net.state_dict(), other.state_dict()], pnet.state_dict()))
    x = torch.randn(4, 1, 28, 28)
    with torch.no_grad():
        out = pnet(torch.cat([x, x], 1))
        assert torch.allclose(out[:, 0], net(x), atol=1e-5) and torch.allclose(out[:, 1], other(x), atol=1e-5)


def test_every_lever_on_trains_and_resumes_in_both_loops(tiny_ds, tmp_path):
    """The airbench-style net with whitening (frozen one epoch), dirac init, frozen BN scales and BN bias
    lr x 16: train() and a pack of one give the same rows, and a pack cut after epoch 1 resumes to them."""
    levers = {"model.whiten": "frozen", "model.whiten_epochs": 1, "model.dirac_init": True}
    levers |= {"model.bn_weight_frozen": True, "train.bn_bias_lr_mult": 16, "train.max_epochs": 2}
    cfg = cfg_of(**AIR, **levers)
    single = train(cfg, tiny_ds, OPTS)
    cut = with_overrides(cfg, {"train.max_epochs": 1})
    first = packed.train_pack([cut], tiny_ds, OPTS, state_dirs=[tmp_path])[cut.resolved().trial_id()]
    assert not isinstance(first, BaseException), first
    pack = packed.train_pack([cfg], tiny_ds, OPTS, state_dirs=[tmp_path])[cfg.resolved().trial_id()]
    assert not isinstance(pack, BaseException), pack
    assert [e["epoch"] for e in pack.epochs] == [1, 2]
    for a, b in zip(pack.epochs, single.epochs, strict=True):
        assert abs(a["val_loss"] - b["val_loss"]) < 1e-4 and abs(a["train_loss"] - b["train_loss"]) < 1e-4
    assert single.n_params == airbench_count((8, 16), 1)


def test_exported_configs_leave_out_the_new_keys_at_their_defaults():
    """trials.csv's config column: the published results' tables regenerate unchanged; a lever that is on shows."""
    shown = Config().to_record()
    assert "whiten" not in shown["model"] and "bn_bias_lr_mult" not in shown["train"] and "depth" in shown["model"]
    on = with_overrides(Config(), {"model.dirac_init": True}).to_record()
    assert on["model"]["dirac_init"] is True
    assert from_dict(shown).trial_id() == Config().trial_id()
