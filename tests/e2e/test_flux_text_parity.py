"""Oracle test: `analyze`'s FLUX.1 conditioning (--clip-l, --t5xxl, --tokenizer-dir) vs sd-scripts'.

Skipped unless SD_SCRIPTS_DIR points at an sd-scripts checkout with flux_train_network.py. Under
SD_SCRIPTS_PYTHON, flux_harness.py builds the tokenizers (CLIP's real BPE vocabulary from
open_clip_torch, a small Unigram T5) and flux_text_oracle.py encodes the prompts the way
flux_train_network does (its tokenizers, T5 length for dev / schnell, text-encoding strategy);
here the same files go through lr_weights.analysis (parse_flux_text_encoders, load_denoiser).
Both sides run in float64, so they agree to float32's eps at the outputs' scale
(tests/tolerances.float64_agreement) unless the math differs; T5's norms are float32 inside
(see the test).
"""

from __future__ import annotations

import json
import subprocess

import pytest

from . import flux_harness as harness

SD_DIR = harness.sd_scripts_dir()
if SD_DIR is None or not (SD_DIR / "flux_train_network.py").is_file():
    pytest.skip("SD_SCRIPTS_DIR not set (or not an sd-scripts checkout with flux_train_network.py)", allow_module_level=True)

PROMPTS = ["a photo of a cat", "a red car on the road, painting", ""]


@pytest.mark.parametrize("guidance_embed, tokens", [(True, 512), (False, 256)], ids=["dev", "schnell"])
def test_conditioning_matches_sd_scripts(tmp_path, guidance_embed, tokens):
    import torch
    from safetensors.torch import load_file

    from lr_weights.analysis.base_model import load_denoiser
    from lr_weights.analysis.flux_text import parse_flux_text_encoders
    from lr_weights.models.tiny_flux import FluxConfig

    from tests.lr_weights.analysis.models_on_disk import flux_text_encoder_configs, write_flux_file, write_flux_text_encoders
    from tests.tolerances import float64_agreement, fp_tolerance

    python, env = harness.sd_harness.sd_python(), harness._env(SD_DIR)
    subprocess.run([python, str(harness.HERE / "flux_harness.py"), "build-tokenizers", str(tmp_path / "tokenizers")], check=True, env=env)
    config = FluxConfig(depth=1, depth_single=1, guidance_embed=guidance_embed)
    write_flux_file(tmp_path / "flow.safetensors", config)
    clip_l, t5xxl, tokenizers, (_, t5) = write_flux_text_encoders(tmp_path, config, tokenizers=tmp_path / "tokenizers")
    clip_config, t5_config = flux_text_encoder_configs(config, t5.config.vocab_size)
    (tmp_path / "oracle_input.json").write_text(json.dumps({"clip": clip_config, "t5": t5_config, "prompts": PROMPTS}))
    subprocess.run([python, str(harness.HERE / "flux_text_oracle.py"), str(SD_DIR), str(tmp_path)], check=True, env=env)
    upstream = load_file(str(tmp_path / "upstream.safetensors"))

    text = parse_flux_text_encoders("flux", PROMPTS, str(clip_l), str(t5xxl), str(tokenizers), str(tmp_path / "flow.safetensors"))
    denoiser = load_denoiser(str(tmp_path / "flow.safetensors"), torch.device("cpu"), torch.float64, "flux", text)
    with torch.no_grad():
        ours = denoiser.encode(PROMPTS)
    assert upstream["txt"].shape == (len(PROMPTS), tokens, config.context_in_dim) and not upstream["txt_ids"].any()
    # T5's RMS norm takes its variance in float32 whatever the model's dtype (transformers' T5LayerNorm),
    # so T5's states carry float32 roundings: per norm (2 per layer and the final one) a cast, a square
    # and d_model additions; CLIP is float64 throughout.
    norms = 2 * t5_config["num_layers"] + 1
    tolerances = {"txt": lambda scale: fp_tolerance(torch.float32, norms * (t5_config["d_model"] + 2), scale), "y": float64_agreement}
    for key, tolerance in tolerances.items():
        want = upstream[key].double()
        assert ours[key].shape == want.shape, key
        worst = float((ours[key] - want).abs().max())
        assert worst <= tolerance(float(want.abs().max())), f"{key}: {worst}"
