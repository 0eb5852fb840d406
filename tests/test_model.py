import itertools

import pytest
import torch

from fmlab.config.schema import Config, with_overrides
from fmlab.model.nets import build, count_params


def independent_count(widths, k, bn, bias, prelu, classes=10, side=28):
    """Parameter count by hand: convs, optional BN (2 per channel), PReLU slopes, the FC."""
    total, c_in = 0, 1
    for w in widths:
        total += c_in * w * k * k + (w if bias else 0) + (2 * w if bn else 0) + (w if prelu else 0)
        c_in, side = w, side // 2
    return total + c_in * side * side * classes + classes


def test_seed_net_has_392714_params_and_log_prob_outputs():
    net = build(Config().model)
    assert count_params(net) == 392_714
    out = net(torch.randn(5, 1, 28, 28))
    assert out.shape == (5, 10)
    assert torch.allclose(out.exp().sum(1), torch.ones(5), atol=1e-5)


@pytest.mark.parametrize(
    "bn,pool,act,k,dropout",
    list(itertools.product([False, True], ["avg", "max"], ["relu", "leaky_relu", "prelu", "gelu"], [3, 5], [0.0, 0.2])),
)
def test_every_switch_builds_counts_and_shapes(bn, pool, act, k, dropout):
    widths = (8, 16, 16)
    cfg = with_overrides(
        Config(),
        {
            "model.batch_norm": bn,
            "model.pool": pool,
            "model.activation": act,
            "model.kernel_size": k,
            "model.dropout": dropout,
            "model.widths": widths,
        },
    ).resolved()
    net = build(cfg.model)
    assert count_params(net) == independent_count(widths, k, bn, cfg.model.conv_bias, act == "prelu")
    assert net(torch.randn(3, 1, 28, 28)).shape == (3, 10)


def test_conv_bias_settable_under_batch_norm():
    on = with_overrides(Config(), {"model.batch_norm": True, "model.conv_bias": True})
    off = with_overrides(Config(), {"model.batch_norm": True})
    assert count_params(build(on.model)) - count_params(build(off.model)) == 64 + 128 + 256


def resnet_count(widths, depth, classes=10, k=3):
    """ResNet parameters by hand: stem conv + BN, per block two convs + two BNs (+ 1x1 conv + BN where
    the width changes), the FC."""
    total = k * k * widths[0] + 2 * widths[0]
    c_in = widths[0]
    for w in widths:
        for _ in range(depth):
            total += k * k * c_in * w + k * k * w * w + 4 * w
            if c_in != w:
                total += c_in * w + 2 * w
            c_in = w
    return total + c_in * classes + classes


def resnet_cfg(**kw):
    return with_overrides(Config(), {"model.arch": "resnet", "model.batch_norm": True, **kw})


def test_resnet20_shape_has_272186_params_and_log_prob_outputs():
    net = build(resnet_cfg(**{"model.widths": "16,32,64", "model.depth": 3}).model)
    assert count_params(net) == 272_186 == resnet_count((16, 32, 64), 3)
    out = net.eval()(torch.randn(4, 1, 28, 28))
    assert out.shape == (4, 10)
    assert torch.allclose(out.exp().sum(1), torch.ones(4), atol=1e-5)


@pytest.mark.parametrize("widths,depth,pool", [((8,), 1, "avg"), ((8, 16), 2, "max"), ((8, 8, 16, 16), 1, "avg")])
def test_resnet_variants_count_and_shape(widths, depth, pool):
    net = build(resnet_cfg(**{"model.widths": widths, "model.depth": depth, "model.pool": pool}).model)
    assert count_params(net) == resnet_count(widths, depth)
    assert net(torch.randn(2, 1, 28, 28)).shape == (2, 10)


def test_resnet_blocks_start_as_identity():
    """The last BN of every block starts at scale 0, so a fresh block passes its input through
    (after the activation): the residual branch contributes nothing at step 0."""
    from fmlab.model.nets import BasicBlock

    blk = BasicBlock(8, 8, 3, "relu").eval()
    x = torch.randn(2, 8, 7, 7)
    assert torch.equal(blk(x), torch.relu(x))


def test_resnet_config_rules_name_the_key():
    from fmlab.config.schema import ConfigError

    with pytest.raises(ConfigError, match="model.batch_norm=true"):
        with_overrides(Config(), {"model.arch": "resnet"})
    with pytest.raises(ConfigError, match="model.depth"):
        with_overrides(Config(), {"model.depth": 2})
    with pytest.raises(ConfigError, match="conv_bias"):
        resnet_cfg(**{"model.conv_bias": True})
    # depth is a neutral field: the seed net's trial ids are unchanged by its existence
    assert Config().trial_id() == "a9528b317040"
