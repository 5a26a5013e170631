"""The saved file loads with diffusers' `load_lora_weights` and does what our patched forward does.

A tiny pipeline is built in-process (random init, SD1 block layout, transformers' CLIPTextModel);
nothing is downloaded. Skipped where diffusers/transformers/peft are not installed.
"""

import pytest
import torch

diffusers = pytest.importorskip("diffusers")
transformers = pytest.importorskip("transformers")
pytest.importorskip("peft")

from lr_weights import lora  # noqa: E402

from tests.tolerances import assert_within, float64_agreement  # noqa: E402


def build_models():
    torch.manual_seed(0)
    unet = diffusers.UNet2DConditionModel(
        sample_size=16,
        block_out_channels=(16, 32, 64, 64),
        layers_per_block=1,
        down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
        up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
        cross_attention_dim=32,
        attention_head_dim=2,
        norm_num_groups=8,
    )
    config = transformers.CLIPTextConfig(
        hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2, vocab_size=1000, max_position_embeddings=16
    )
    return transformers.CLIPTextModel(config).eval(), unet.eval()


def run(text_encoder, unet, inputs):
    """Context and U-Net output in float64: both sides then round at 2⁻⁵³ per op, so any gap above
    float32's resolution is a formula difference, not rounding (tests/tolerances.py)."""
    tokens, latents, timesteps = inputs
    text_encoder.double()
    unet.double()
    with torch.no_grad():
        context = text_encoder(tokens)[0]
        return context, unet(latents.double(), timesteps, context).sample


def test_saved_lora_loads_in_diffusers_and_matches_the_patched_forward(tmp_path):
    torch.manual_seed(1)
    inputs = (torch.randint(0, 1000, (1, 16)), torch.randn(1, 4, 16, 16), torch.tensor([500]))
    text_encoder, unet = build_models()

    network = lora.create_network(1.0, 4, 2.0, None, text_encoder, unet, conv_dim="4", conv_alpha="1", down_lr_weight="sine+.25")
    network.apply_to(text_encoder, unet)
    assert network.text_encoder_loras and any(m.kind == "conv" for m in network.unet_loras)
    with torch.no_grad():
        for module in network.all_loras:
            module.lora_up.weight.normal_(std=0.05)
    # Saved from float32 tensors in float32: the file holds exactly the weights we run with.
    network.save_weights(str(tmp_path / "lora.safetensors"), torch.float32, {"ss_network_module": "lr_weights.lora"})
    network.to(torch.float64)
    ours_context, ours_out = run(text_encoder, unet, inputs)
    network.set_multiplier(0.0)
    base_context, base_out = run(text_encoder, unet, inputs)
    context_tolerance = float64_agreement(ours_context.abs().max().item())
    out_tolerance = float64_agreement(ours_out.abs().max().item())
    # The LoRA changes both outputs far beyond the tolerances, so a wrong scale or key could not hide.
    assert (ours_context - base_context).abs().max() > 1e3 * context_tolerance
    assert (ours_out - base_out).abs().max() > 1e3 * out_tolerance

    text_encoder2, unet2 = build_models()
    vae = diffusers.AutoencoderKL(
        block_out_channels=(8,), down_block_types=("DownEncoderBlock2D",), up_block_types=("UpDecoderBlock2D",), norm_num_groups=8
    )
    pipe = diffusers.StableDiffusionPipeline(
        vae=vae, text_encoder=text_encoder2, tokenizer=None, unet=unet2, scheduler=diffusers.DDIMScheduler(),
        safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )
    pipe.load_lora_weights(str(tmp_path), weight_name="lora.safetensors")
    theirs_context, theirs_out = run(pipe.text_encoder, pipe.unet, inputs)
    assert theirs_out.dtype == torch.float64

    assert_within(theirs_context, ours_context, context_tolerance, "text encoder output")
    assert_within(theirs_out, ours_out, out_tolerance, "U-Net output")
