"""The Lumina e2e harness's pure parts, without sd-scripts: block labels and the tiny model's counts."""

from __future__ import annotations

import pytest

from lr_weights.archs.lumina import LUMINA

from . import lumina_harness as harness


@pytest.mark.parametrize(
    "key, block",
    [
        ("lora_te_layers_1_self_attn_q_proj.lora_down.weight", "TE"),
        ("lora_te_layers_0_mlp_down_proj.alpha", "TE"),
        ("lora_unet_x_embedder.lora_up.weight", "IN"),
        ("lora_unet_t_embedder_mlp_0.lora_down.weight", "IN"),
        ("lora_unet_context_refiner_1_attention_qkv.lora_up.weight", "C1"),
        ("lora_unet_noise_refiner_0_adaLN_modulation_1.alpha", "N0"),
        ("lora_unet_layers_7_feed_forward_w2.lora_down.weight", "L07"),
        ("lora_unet_layers_25_attention_out.lora_up.weight", "L25"),
        ("lora_unet_final_layer_linear.lora_down.weight", "OUT"),
        ("lora_unet_final_layer_adaLN_modulation_1.alpha", "OUT"),
    ],
)
def test_block_label(key, block):
    assert harness.block_label(key) == block


def test_block_labels_are_the_documented_blocks():
    """The harness's labels are the block names docs/lumina.md and lr_weights use (TE aside)."""
    labels = {"IN", "OUT"} | {f"C{i}" for i in range(2)} | {f"N{i}" for i in range(2)}
    labels |= {f"L{i:02d}" for i in range(harness.NUM_LAYERS)}
    assert labels == set(LUMINA.block_names)


def test_tiny_model_has_the_real_counts():
    """The tiny checkpoint keeps Lumina 2 2B's structure: 26 layers, grouped-query attention, the
    rope axes summing to the head size, Gemma2's width as the caption feature size."""
    cfg = harness.TINY_CONFIG
    assert cfg["lumina"]["n_layers"] == harness.NUM_LAYERS == 26
    assert cfg["lumina"]["n_kv_heads"] < cfg["lumina"]["n_heads"]
    assert sum(cfg["lumina"]["axes_dims"]) == cfg["lumina"]["dim"] // cfg["lumina"]["n_heads"]
    assert cfg["lumina"]["cap_feat_dim"] == cfg["gemma2"]["hidden_size"]
    assert cfg["lumina"]["in_channels"] == cfg["ae"]["z_channels"]
