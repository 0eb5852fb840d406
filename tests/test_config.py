import dataclasses

import pytest

from fmlab.config import fields
from fmlab.config import schema as config
from fmlab.config.schema import Config, ConfigError, from_dict, trial_id, with_overrides


def test_defaults_are_the_seed_studys_best_cell():
    c = Config()
    assert (c.model.pool, c.model.dropout, c.model.batch_norm) == ("avg", 0.2, False)
    assert (c.train.optimizer, c.train.lr, c.train.batch_size, c.train.patience) == ("adam", 1e-3, 64, 4)
    assert c.train.monitor == "val_loss"


def test_set_parses_and_coerces():
    c = with_overrides(
        Config(),
        config.parse_sets(["model.batch_norm=true", "train.batch_size=128", "train.lr=3e-4", "model.widths=32,64,128"]),
    )
    assert c.model.batch_norm is True and c.train.batch_size == 128 and c.train.lr == 3e-4
    assert c.model.widths == (32, 64, 128)


@pytest.mark.parametrize(
    "key,value,named",
    [
        ("model.nope", "1", "model.batch_norm"),
        ("model.pool", "median", "'avg', 'max'"),
        ("train.batch_size", "12.5", "integer"),
        ("model.batch_norm", "maybe", "true, false"),
        ("model.dropout", "1.5", "range"),
        ("model.kernel_size", "4", "3, 5"),
        ("model.widths", "a,b", "positive integers"),
    ],
)
def test_bad_keys_and_values_name_the_key_and_allowed(key, value, named):
    with pytest.raises(ConfigError) as e:
        with_overrides(Config(), {key: value})
    assert key in str(e.value) and named in str(e.value)


def test_set_without_equals_is_an_error():
    with pytest.raises(ConfigError, match="key=value"):
        config.parse_sets(["model.batch_norm"])


def test_conv_bias_auto_resolves_and_hashes_as_its_meaning():
    bn = with_overrides(Config(), {"model.batch_norm": True})
    assert bn.resolved().model.conv_bias is False
    assert trial_id(bn) == trial_id(with_overrides(bn, {"model.conv_bias": False}))
    assert trial_id(bn) != trial_id(with_overrides(bn, {"model.conv_bias": True}))
    assert Config().resolved().model.conv_bias is True


def test_trial_id_is_stable_and_changes_with_result_affecting_values():
    base = Config()
    assert trial_id(base) == trial_id(Config()) == "a9528b317040"  # pinned: ids must not drift
    assert trial_id(with_overrides(base, {"seed": 1})) != trial_id(base)
    assert trial_id(with_overrides(base, {"train.lr": 0.0010000001})) != trial_id(base)
    assert trial_id(with_overrides(base, {"train.precision": "bf16"})) != trial_id(base)


def test_a_field_added_later_at_its_neutral_value_keeps_ids():
    @dataclasses.dataclass(frozen=True)
    class TrainV2(config.TrainConfig):
        later: float = fields._neutral(0.0)

    old = Config()
    new = dataclasses.replace(old, train=TrainV2())
    assert trial_id(new) == trial_id(old)
    assert trial_id(dataclasses.replace(old, train=TrainV2(later=0.99))) != trial_id(old)


def test_round_trip_through_dict():
    c = with_overrides(Config(), {"model.widths": "8,16,16", "train.monitor": "val_acc", "seed": 3})
    assert from_dict(c.to_dict()) == c
    with pytest.raises(ConfigError):
        from_dict({**c.to_dict(), "extra": 1})
