"""Per-encoder text-encoder LRs: `--text_encoder_lr a b` on the newest hosts, unchanged elsewhere.

The trainers below replay how hosts call the network (CONTRACT §1.8): the newest passes
`--text_encoder_lr` as given (None, a number from a TOML file, or a list) to
`prepare_optimizer_params_with_multiple_te_lrs` when the network has it; v0.9-era trainers read
descriptions but pass only the first value to `prepare_optimizer_params`; GUI-era trainers pass one
value and need a plain list back.
"""

import importlib.util
import textwrap

import pytest

from lr_weights import dylora, lora
from lr_weights.models.tiny import build_tiny_sd

TRAINERS = {
    "newest": '''
        def train(network, text_encoder_lr, unet_lr, learning_rate):
            support_multiple_lrs = hasattr(network, "prepare_optimizer_params_with_multiple_te_lrs")
            if not support_multiple_lrs and isinstance(text_encoder_lr, list):
                text_encoder_lr = None if len(text_encoder_lr) == 0 else text_encoder_lr[0]
            try:
                if support_multiple_lrs:
                    results = network.prepare_optimizer_params_with_multiple_te_lrs(text_encoder_lr, unet_lr, learning_rate)
                else:
                    results = network.prepare_optimizer_params(text_encoder_lr, unet_lr, learning_rate)
                if type(results) is tuple:
                    trainable_params, lr_descriptions = results
                else:
                    trainable_params, lr_descriptions = results, None
            except TypeError:
                trainable_params, lr_descriptions = network.prepare_optimizer_params(text_encoder_lr, unet_lr), None
            return trainable_params, lr_descriptions
    ''',
    "v0.9": '''
        def train(network, text_encoder_lr, unet_lr, learning_rate):
            if isinstance(text_encoder_lr, list):
                text_encoder_lr = None if len(text_encoder_lr) == 0 else text_encoder_lr[0]
            results = network.prepare_optimizer_params(text_encoder_lr, unet_lr, learning_rate)
            if type(results) is tuple:
                trainable_params, lr_descriptions = results
            else:
                trainable_params, lr_descriptions = results, None
            return trainable_params, lr_descriptions
    ''',
    "gui": '''
        def train(network, text_encoder_lr, unet_lr, learning_rate):
            trainable_params = network.prepare_optimizer_params(text_encoder_lr, unet_lr, learning_rate)
            assert isinstance(trainable_params, list), "the GUI-era trainer hands this straight to the optimizer"
            return trainable_params, None
    ''',
}


def trainer(tmp_path, era):
    path = tmp_path / f"{era.replace('.', '_')}" / "train_network.py"
    path.parent.mkdir()
    path.write_text(textwrap.dedent(TRAINERS[era]))
    spec = importlib.util.spec_from_file_location(f"trainer_{era.replace('.', '_')}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.train


def two_encoder_network(module=lora, **kwargs):
    """Two text encoders (named lora_te1_/lora_te2_, as SDXL's) over a tiny U-Net: fast and enough for groups."""
    te1, unet = build_tiny_sd(0)
    te2, _ = build_tiny_sd(1)
    network = module.create_network(1.0, 4, 1, None, [te1, te2], unet, **kwargs)
    network.apply_to([te1, te2], unet)
    return network


def te_groups(params, descriptions, network):
    owner = {id(p): m.lora_name[:8] for m in network.text_encoder_loras for p in m.parameters()}
    out = []
    for index, group in enumerate(params):
        prefixes = {owner.get(id(p)) for p in group["params"]}
        if prefixes == {None}:
            continue
        out.append((None if descriptions is None else descriptions[index], group["lr"], sorted(prefixes)))
    return out


@pytest.mark.parametrize("module", [lora, dylora])
@pytest.mark.parametrize(
    "given,expected",
    [
        (None, [("textencoder", 1e-2, ["lora_te1", "lora_te2"])]),
        ([], [("textencoder", 1e-2, ["lora_te1", "lora_te2"])]),
        (2e-5, [("textencoder", 2e-5, ["lora_te1", "lora_te2"])]),
        ([2e-5], [("textencoder", 2e-5, ["lora_te1", "lora_te2"])]),
        ([2e-5, 5e-6], [("textencoder 1", 2e-5, ["lora_te1"]), ("textencoder 2", 5e-6, ["lora_te2"])]),
    ],
)
def test_newest_host(tmp_path, module, given, expected):
    network = two_encoder_network(module, down_lr_weight="linear+0.5")
    params, descriptions = trainer(tmp_path, "newest")(network, given, 1e-3, 1e-2)
    assert te_groups(params, descriptions, network) == expected
    assert descriptions[-1] == "unet_block12"  # the U-Net groups are untouched


def test_newest_host_with_loraplus_twins_each_encoder(tmp_path):
    network = two_encoder_network(loraplus_text_encoder_lr_ratio="4")
    params, descriptions = trainer(tmp_path, "newest")(network, [2e-5, 5e-6], 1e-3, 1e-2)
    assert te_groups(params, descriptions, network) == [
        ("textencoder 1", 2e-5, ["lora_te1"]),
        ("textencoder 1 plus", 8e-5, ["lora_te1"]),
        ("textencoder 2", 5e-6, ["lora_te2"]),
        ("textencoder 2 plus", 2e-5, ["lora_te2"]),
    ]


def test_zero_lr_for_one_encoder_leaves_it_out(tmp_path):
    network = two_encoder_network()
    params, descriptions = trainer(tmp_path, "newest")(network, [0.0, 5e-6], 1e-3, 1e-2)
    assert te_groups(params, descriptions, network) == [("textencoder 2", 5e-6, ["lora_te2"])]


def test_one_encoder_model_uses_the_first_value_and_warns(tmp_path, caplog):
    te, unet = build_tiny_sd(0)
    network = lora.create_network(1.0, 4, 1, None, te, unet)
    network.apply_to(te, unet)
    params, descriptions = trainer(tmp_path, "newest")(network, [2e-5, 5e-6], 1e-3, 1e-2)
    assert te_groups(params, descriptions, network) == [("textencoder", 2e-5, ["lora_te_"])]
    assert "one text encoder" in caplog.text


@pytest.mark.parametrize("era", ["v0.9", "gui"])
@pytest.mark.parametrize("given,lr", [(None, 1e-2), (2e-5, 2e-5), ([2e-5, 5e-6], 2e-5)])
def test_older_hosts_behave_as_before(tmp_path, era, given, lr):
    if era == "gui" and isinstance(given, list):
        given = given[0]  # the GUI-era argparse takes one float
    network = two_encoder_network()
    params, descriptions = trainer(tmp_path, era)(network, given, 1e-3, 1e-2)
    expected_description = "textencoder" if era == "v0.9" else None
    assert te_groups(params, descriptions, network) == [(expected_description, lr, ["lora_te1", "lora_te2"])]

