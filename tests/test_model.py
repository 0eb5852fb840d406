import itertools

import pytest
import torch

from fmlab.config import Config, with_overrides
from fmlab.model import build, count_params


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


@pytest.mark.parametrize("bn,pool,act,k,dropout", list(itertools.product(
    [False, True], ["avg", "max"], ["relu", "leaky_relu", "prelu", "gelu"], [3, 5], [0.0, 0.2])))
def test_every_switch_builds_counts_and_shapes(bn, pool, act, k, dropout):
    widths = (8, 16, 16)
    cfg = with_overrides(Config(), {"model.batch_norm": bn, "model.pool": pool, "model.activation": act,
                                    "model.kernel_size": k, "model.dropout": dropout,
                                    "model.widths": widths}).resolved()
    net = build(cfg.model)
    assert count_params(net) == independent_count(widths, k, bn, cfg.model.conv_bias, act == "prelu")
    assert net(torch.randn(3, 1, 28, 28)).shape == (3, 10)


def test_conv_bias_settable_under_batch_norm():
    on = with_overrides(Config(), {"model.batch_norm": True, "model.conv_bias": True})
    off = with_overrides(Config(), {"model.batch_norm": True})
    assert count_params(build(on.model)) - count_params(build(off.model)) == 64 + 128 + 256
