"""The three sections of a config (model, data, train) as frozen dataclasses: every field, its type and its
default (the seed study's baseline), and which fields arrived late (left out of the trial hash, and of a
record, at their neutral value). fmlab.config.schema puts them together into a Config.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal


def _neutral(default: Any, **kw: Any) -> Any:
    """A field added after v1: left out of the trial hash while it holds this neutral value,
    so trial ids made before the field existed stay valid."""
    return field(default=default, metadata={"neutral": default, **kw})


def _late(default: Any) -> Any:
    """A field added after results/ was published (issue 33's levers): neutral, and also left out of a
    record's config at its neutral value (Config.to_record), so the store, trial.json and trials.csv of a
    trial that leaves it alone read as they did before it existed (results/ regenerates byte for byte)."""
    return _neutral(default, late=True)


@dataclass(frozen=True)
class ModelConfig:
    arch: Literal["seed", "resnet", "airbench"] = "seed"  # network family; seed = conv blocks + 1 FC; see model/nets.py
    widths: tuple[int, ...] = (64, 128, 256)  # output channels of each conv block
    kernel_size: Literal[3, 5] = 3  # conv kernel side, pixels ("same" padding)
    batch_norm: bool = False  # BatchNorm after each conv
    conv_bias: Literal["auto", True, False] = "auto"  # auto = bias only without batch norm
    dropout: float = 0.2  # drop probability after the last conv block, 0 = off
    pool: Literal["avg", "max"] = "avg"  # 2x2 pooling after each conv block
    activation: Literal["relu", "leaky_relu", "prelu", "gelu"] = "relu"
    depth: int = _neutral(1)  # resnet: basic blocks per stage; airbench: convs after each group's first; seed: 1
    # Initialisation levers (fmlab.model.inits, applied in training.step.start_lane); off at their defaults.
    whiten: Literal["off", "frozen", "trained"] = _late("off")  # first conv = training patches' whitening
    whiten_epochs: int = _late(0)  # whiten=frozen: epochs it stays frozen, then trained; 0 = the whole run
    dirac_init: bool = _late(False)  # convs with out >= in channels start as the identity on their first inputs
    bn_weight_frozen: bool = _late(False)  # BatchNorm scales fixed at 1 (only the biases train)


@dataclass(frozen=True)
class DataConfig:
    # images held out of train for validation (stratified); 0 = none: all 60,000 train, the last epoch is tested
    val_size: int = 5000
    split_seed: int = 0  # seed of the train/val split (fixed across trials)
    train_subset: int = 0  # 0 = all remaining training images, else a stratified subset
    test_subset: int = _late(0)  # 0 = all 10,000 test images are evaluated, else a stratified subset (quick looks)
    mean: float = 0.2860  # input normalisation, pixel units in [0, 1]
    std: float = 0.3530
    # Training-batch augmentation (augment.py), applied in this order; 0 = off. Pixel units are the
    # [0, 1] scale before normalisation; blanked pixels take the background value 0.
    flip: float = _neutral(0.0)  # probability of mirroring an image left-right
    translate_px: int = _neutral(0)  # max shift, pixels, each axis (uniform in -n..n), blank fill
    erase_p: float = _neutral(0.0)  # probability of blanking one random rectangle (random erasing)
    erase_area_min: float = _neutral(0.02)  # erased rectangle's area, fraction of the image, lower
    erase_area_max: float = _neutral(0.33)  # ... and upper bound (aspect ratio log-uniform 0.3..3.3)
    noise_std: float = _neutral(0.0)  # std of added Gaussian noise, pixel units (not clipped)
    flip_mode: Literal["random", "alternate"] = _late("random")  # alternate: each image mirrored every other epoch
    mixup: float = _late(0.0)  # mixup's Beta(alpha, alpha) alpha: pairs of images blended, targets too; 0 = off
    cutmix: float = _late(0.0)  # cutmix's alpha: a box of another image pasted, targets by area; 0 = off


@dataclass(frozen=True)
class TrainConfig:
    optimizer: Literal["adam", "adamw", "sgd"] = "adam"
    lr: float = 1e-3  # learning rate (the peak rate when a schedule warms up or decays)
    batch_size: int = 64  # images per step
    max_epochs: int = 30  # cap on epochs; early stopping usually ends sooner
    monitor: Literal["val_loss", "val_acc"] = "val_loss"  # early stopping and model choice
    patience: int = 4  # epochs without improvement before stopping
    min_delta: float = 0.0  # improvement smaller than this does not count
    # bf16 = autocast on CPU/GPU matmuls and convs; auto = bf16 where the machine computes it natively and (on a
    # CPU) a step measures faster, else fp32
    # (training.env.pick_precision; the precision a trial trained in is recorded: timings["precision"])
    precision: Literal["fp32", "bf16", "auto"] = "fp32"
    weight_decay: float = _neutral(0.0)  # adamw: decoupled decay per step x lr; adam, sgd: L2 in grad
    momentum: float = _neutral(0.9)  # sgd only: heavy-ball momentum coefficient
    nesterov: bool = _neutral(False)  # sgd only: Nesterov momentum (needs momentum > 0)
    # Learning rate schedule, a function of the step over max_epochs (train.lr_at).
    schedule: Literal["constant", "step", "cosine", "linear", "onecycle"] = _neutral("constant")
    warmup_epochs: float = _neutral(0.0)  # epochs of linear warm-up to lr; onecycle: its rise, 0 = 30%
    lr_min: float = _neutral(0.0)  # cosine, linear, onecycle: rate reached at max_epochs, lr units
    step_every: int = _neutral(10)  # step: epochs between decays
    step_gamma: float = _neutral(0.1)  # step: factor applied at each decay
    label_smoothing: float = _neutral(0.0)  # training loss = (1-eps) NLL + eps mean(-log p); 0 = off
    tta: bool = _neutral(False)  # val and test: average the log-probs of each image and its mirror
    bn_bias_lr_mult: float = _late(1.0)  # BatchNorm biases' lr (and 1/x their weight decay) x this
    tta_shifts: int = _late(0)  # val and test: each view also shifted by (-n, -n) and (n, n) pixels; 0 = off
    ema: float = _late(0.0)  # decay of an average of the weights, which validates, tests and is saved; 0 = off
    ema_every: int = _late(1)  # steps between updates of the average (train.ema > 0)
