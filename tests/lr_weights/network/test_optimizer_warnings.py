"""prepare_network(args): one plain warning when the optimizer cannot honour per-group LRs.

Adafactor with relative_step (sd-scripts drops every group's lr), D-Adaptation and Prodigy (they
raise at the first step when groups have different non-zero LRs) — and never for AdamW or Lion.
"""

import logging
from types import SimpleNamespace

import pytest

from lr_weights import dylora, lora
from lr_weights.network.optimizer_check import optimizer_warnings
from lr_weights.models.tiny import build_tiny_sd


def host_args(optimizer_type=None, optimizer_args=None, **extra):
    values = dict(
        optimizer_type=optimizer_type, optimizer_args=optimizer_args, use_8bit_adam=False, use_lion_optimizer=False,
        learning_rate=1e-4, unet_lr=None, text_encoder_lr=None,
    )
    values.update(extra)
    return SimpleNamespace(**values)


def network(module=lora, **kwargs):
    te, unet = build_tiny_sd(0)
    net = module.create_network(1.0, 4, 1, None, te, unet, **kwargs)
    return net


BLOCKS = dict(down_lr_weight="sine+.25", up_lr_weight="cosine+.25")

WARNED = [
    ("Adafactor", None, "relative_step=False"),
    ("Adafactor", ["relative_step=True"], "relative_step=False"),
    ("adafactor", ["relative_step=False", "warmup_init=True"], "relative_step=False"),
    ("DAdaptation", None, "one learning rate"),
    ("DAdaptAdam", ["decouple=True"], "one learning rate"),
    ("DAdaptLion", None, "one learning rate"),
    ("Prodigy", ["d_coef=2"], "one learning rate"),
    ("prodigyplus.ProdigyPlusScheduleFree", None, "one learning rate"),
]


@pytest.mark.parametrize("module", [lora, dylora])
@pytest.mark.parametrize("optimizer_type,optimizer_args,advice", WARNED)
def test_warned_once_per_family(caplog, module, optimizer_type, optimizer_args, advice):
    net = network(module, **BLOCKS)
    args = host_args(optimizer_type, optimizer_args)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="lr_weights"):
        net.prepare_network(args)
        net.prepare_network(args)  # a second call says nothing new
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "block LR weights" in warnings[0].getMessage() and advice in warnings[0].getMessage()


@pytest.mark.parametrize(
    "args",
    [
        host_args(None),
        host_args("AdamW"),
        host_args("AdamW8bit"),
        host_args("Lion"),
        host_args("Lion8bit"),
        host_args(None, use_8bit_adam=True),
        host_args(None, use_lion_optimizer=True),
        host_args("Adafactor", ["scale_parameter=False", "relative_step=False", "warmup_init=False"]),
    ],
)
def test_never_for_optimizers_that_honour_group_lrs(caplog, args):
    net = network(loraplus_lr_ratio="16", **BLOCKS)
    with caplog.at_level(logging.WARNING, logger="lr_weights"):
        net.prepare_network(args)
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_nothing_to_lose_means_no_warning():
    net = network()
    assert net.group_lr_features(host_args("Prodigy", learning_rate=1.0)) == []
    assert optimizer_warnings(host_args("Prodigy"), []) == []


def test_what_counts_as_per_group_lrs():
    assert network(loraplus_unet_lr_ratio="4").group_lr_features(host_args()) == ["LoRA+ ratio"]
    assert network().group_lr_features(host_args(text_encoder_lr=[5e-5])) == ["text encoder LR different from the U-Net's"]
    assert network().group_lr_features(host_args(text_encoder_lr=1e-4)) == []
    assert network(down_lr_weight="1,1,1,0,0,0,1,1,1,1,1,1").group_lr_features(host_args()) == []  # 0/1 only prunes
    assert network(lbw_weights="0.5," + ",".join(["1"] * 16)).group_lr_features(host_args()) == ["text encoder LR different from the U-Net's"]
