"""End-to-end harness: run the real sd-scripts `sd3_train_network.py` on a tiny SD3.5 medium.

Used two ways, like flux_harness.py next to it:

* imported by the pytest tests (standard library only), and
* executed as a script by the sd-scripts interpreter (``SD_SCRIPTS_PYTHON``)::

      python sd3_harness.py build-tokenizers OUT_DIR
      python sd3_harness.py build-model OUT_DIR TOKENIZER_DIR
      python sd3_harness.py build-dataset OUT_DIR
      python sd3_harness.py compare A.safetensors B.safetensors [OUT.json]

The tiny MMDiT has SD3.5 medium's block structure (24 joint blocks, the last one's context block
`pre_only`, RMS qk-norm, `x_block.attn2` in blocks 0-12, hence the real LoRA names) at hidden
size 64 (one 64-channel head, what sd-scripts derives from a depth of 1). sd-scripts derives the
width from the depth and builds CLIP-L, CLIP-G, T5-XXL and the VAE from fixed configs;
``run_sd3_sd_scripts.py`` overrides those from outside, so the training script itself runs
unchanged. Tokenizers (CLIP-L, CLIP-G, T5) are flux_harness's offline ones; the dataset is
sd_scripts_harness's.

Nothing here is copied from sd-scripts.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Dict, List, Sequence

HERE = Path(__file__).resolve().parent
RUNNER = HERE / "run_sd3_sd_scripts.py"

try:  # imported as tests.e2e.sd3_harness
    from . import flux_harness
    from . import sd_scripts_harness as sd_harness
except ImportError:  # executed as a script
    sys.path.insert(0, str(HERE))
    import flux_harness  # type: ignore[no-redef]
    import sd_scripts_harness as sd_harness  # type: ignore[no-redef]

# ---------------------------------------------------------------------------------------------
# Tiny architecture. The runner reads these from <model dir>/tiny_config.json.
# ---------------------------------------------------------------------------------------------
RESOLUTION = 64  # VAE downsamples x8 -> 8x8x16 latents -> 4x4 patches
T5_MAX_TOKENS = 32
NUM_JOINT = 24  # SD3.5 medium (and SD3 medium)
X_SELF_ATTN_LAYERS = list(range(13))  # SD3.5 medium's x_block.attn2 blocks
WIDTH_DEPTH = 1  # sd-scripts' width is 64 x depth: hidden 64, one head
T5_D_MODEL = 4096  # sd-scripts pads the CLIP states to a literal 4096 and concatenates T5's

_CLIP = dict(flux_harness.TINY_CONFIG["clip"])  # quick_gelu, eos id 2 (argmax pooling), as sd3_utils
TINY_CONFIG: Dict[str, Dict[str, object]] = {
    "mmdit": dict(
        depth=NUM_JOINT,
        width_depth=WIDTH_DEPTH,
        patch_size=2,
        pos_embed_max_size=8,
        x_block_self_attn_layers=X_SELF_ATTN_LAYERS,
        qk_norm="rms",
    ),
    "vae": dict(ch=32, ch_mult=[1, 1, 1, 1], num_res_blocks=1),  # three downsamplings, 16 latent channels
    "clip_l": _CLIP,
    "clip_g": dict(_CLIP, hidden_act="gelu"),  # as sd3_utils' CLIP-G config
    "t5": dict(flux_harness.TINY_CONFIG["t5"], d_model=T5_D_MODEL, d_kv=8, d_ff=32),
}


# ---------------------------------------------------------------------------------------------
# Block args -> the equivalent upstream network_args (pure Python; used by the tests too)
# ---------------------------------------------------------------------------------------------
def kept_block_indices(weights: Sequence[float], threshold: float = 0.0) -> str:
    """upstream lora_sd3's `train_block_indices` value for "no modules in joint blocks whose
    weight is <= threshold" (block_lr_zero_threshold's rule; default threshold 0)."""
    kept = [str(i) for i, w in enumerate(weights) if w > threshold]
    return ",".join(kept) if kept else "none"


def block_label(key: str) -> str:
    """Block of an SD3 LoRA key: TE1 (CLIP-L), TE2 (CLIP-G), TE3 (T5), J00..J23, IN, OUT."""
    name = key.split(".", 1)[0]
    for number in (1, 2, 3):
        if name.startswith(f"lora_te{number}_"):
            return f"TE{number}"
    prefix = "lora_unet_joint_blocks_"
    if name.startswith(prefix):
        return f"J{int(name[len(prefix):].split('_')[0]):02d}"
    if name.startswith("lora_unet_final_layer"):
        return "OUT"
    return "IN"


# ---------------------------------------------------------------------------------------------
# Pieces that run inside the sd-scripts interpreter (need torch & friends)
# ---------------------------------------------------------------------------------------------
def tiny_config(tokenizer_dir: Path) -> Dict[str, Dict[str, object]]:
    cfg = json.loads(json.dumps(TINY_CONFIG))
    cfg["t5"]["vocab_size"] = flux_harness.tiny_config(tokenizer_dir)["t5"]["vocab_size"]
    return cfg


def _tiny_mmdit(cfg: dict):
    """The tiny MMDiT through sd-scripts' own constructor (as the runner patches it), with the
    tensors upstream leaves uninitialised filled: pos_embed (its sin-cos table) and the RMS
    qk-norm scales (ones). Linear layers keep torch's default init: upstream's
    initialize_weights zeroes the final layer, which would stop every gradient."""
    import torch

    from library import sd3_models

    m = cfg["mmdit"]
    params = sd3_models.SD3Params(
        patch_size=m["patch_size"],
        depth=m["width_depth"],
        num_patches=m["pos_embed_max_size"] ** 2,
        pos_embed_max_size=m["pos_embed_max_size"],
        adm_in_channels=cfg["clip_l"]["projection_dim"] + cfg["clip_g"]["projection_dim"],
        qk_norm=m["qk_norm"],
        x_block_self_attn_layers=m["x_block_self_attn_layers"],
        context_embedder_in_features=T5_D_MODEL,
        context_embedder_out_features=64 * m["width_depth"],
        model_type="5-medium",
    )
    mmdit = sd3_models.create_sd3_mmdit(params)
    table = sd3_models.get_2d_sincos_pos_embed(mmdit.hidden_size, m["pos_embed_max_size"])
    mmdit.pos_embed.copy_(torch.from_numpy(table).float().unsqueeze(0))
    for module in mmdit.modules():
        if isinstance(module, sd3_models.RMSNorm) and module.weight is not None:
            torch.nn.init.ones_(module.weight)
    return mmdit


def build_model(out_dir: Path, tokenizer_dir: Path, seed: int = 0) -> Path:
    """Random tiny SD3.5 medium MMDiT (`model.diffusion_model.` keys), CLIP-L, CLIP-G, T5 and VAE
    safetensors + tiny_config.json."""
    import torch
    from transformers import CLIPTextConfig, CLIPTextModelWithProjection, T5Config, T5EncoderModel

    from library import sd3_models

    import run_sd3_sd_scripts as runner  # this folder is sys.path[0]

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    cfg = tiny_config(tokenizer_dir)
    runner.install_tiny_models(cfg)
    torch.manual_seed(seed)
    with torch.no_grad():
        mmdit = _tiny_mmdit(cfg)
    vae = sd3_models.SDVAE()
    clip_l = CLIPTextModelWithProjection(CLIPTextConfig(**cfg["clip_l"]))
    clip_g = CLIPTextModelWithProjection(CLIPTextConfig(**cfg["clip_g"]))
    t5 = T5EncoderModel(T5Config(**cfg["t5"]))

    flux_harness.save_model(mmdit, out_dir / "sd3.5-tiny-medium.safetensors", prefix="model.diffusion_model.")
    flux_harness.save_model(vae, out_dir / "vae.safetensors")
    flux_harness.save_model(clip_l, out_dir / "clip_l.safetensors")
    flux_harness.save_model(clip_g, out_dir / "clip_g.safetensors")
    flux_harness.save_model(t5, out_dir / "t5xxl.safetensors", drop=("encoder.embed_tokens.weight",))  # tied to "shared"
    (out_dir / "tiny_config.json").write_text(json.dumps(cfg, indent=1))
    return out_dir


def compare_files(a: str, b: str) -> dict:
    return flux_harness.compare_files(a, b, block_label)


# ---------------------------------------------------------------------------------------------
# Driver side (standard library only)
# ---------------------------------------------------------------------------------------------
sd_scripts_dir = sd_harness.sd_scripts_dir
sd_python = sd_harness.sd_python
assert_same_files = sd_harness.assert_same_files


class Sd3Workspace(flux_harness.FluxWorkspace):
    """The tiny SD3.5 medium model files, trained by sd3_train_network.py through
    run_sd3_sd_scripts.py (the same tokenizers, dataset and flow as the FLUX workspace)."""

    harness = Path(__file__).resolve()
    runner = RUNNER
    script = "sd3_train_network.py"
    model_dirname = "model_sd3_tiny"
    resolution = RESOLUTION

    def model_args(self) -> List[str]:
        return [
            "--pretrained_model_name_or_path", str(self.model / "sd3.5-tiny-medium.safetensors"),
            "--clip_l", str(self.model / "clip_l.safetensors"),
            "--clip_g", str(self.model / "clip_g.safetensors"),
            "--t5xxl", str(self.model / "t5xxl.safetensors"),
            "--vae", str(self.model / "vae.safetensors"),
            "--tokenizer_cache_dir", str(self.tokenizers),
            "--t5xxl_max_token_length", str(T5_MAX_TOKENS),
        ]

    def family_args(self) -> List[str]:
        return []


def _main(argv: List[str]) -> None:
    builders = {
        "build-tokenizers": lambda out: flux_harness.build_tokenizers(Path(out)),
        "build-model": lambda out, tokenizers: build_model(Path(out), Path(tokenizers)),
        "build-dataset": lambda out: flux_harness.build_dataset(Path(out)),
    }
    sd_harness.run_command_line(argv, builders, compare_files)


if __name__ == "__main__":
    _main(sys.argv[1:])
