"""Run sd-scripts' sd3_train_network.py on the tiny SD3 that sd3_harness.py builds.

    python run_sd3_sd_scripts.py --tiny-config MODEL_DIR/tiny_config.json -- /path/to/sd-scripts/sd3_train_network.py --arg ...

sd-scripts reads an MMDiT's shape from the checkpoint, but derives its width from its depth
(hidden = 64 x depth, one 64-channel head per block), reading the depth back as
`x_embedder.proj.weight.shape[0] // 64`; it builds CLIP-L, CLIP-G, T5-XXL and the VAE from fixed
configs. Before the training script runs (unchanged, as `__main__` in this process, from its own
directory) this wrapper points those at the tiny sizes in tiny_config.json:

* `sd3_models.create_sd3_mmdit`: builds the MMDiT upstream's way for the checkpoint's width (64 x
  depth 1), then gives it the real number of joint blocks (tiny_config's `mmdit.depth`):
  upstream's own MMDiTBlock, with the arguments MMDiT passed to its first block, the last one
  `pre_only` and `x_block_self_attn` where the checkpoint has `attn2`, as MMDiT does;
* `sd3_models.VAEEncoder` / `VAEDecoder`: upstream's classes with a narrower `ch`, `ch_mult` and
  `num_res_blocks` (SDVAE builds them with defaults);
* `sd3_utils.load_clip_l` / `load_clip_g`: same signature, but a tiny CLIPTextModelWithProjection
  from the config, loaded from the given file; `sd3_utils.flux_utils_load_t5xxl` (which
  `sd3_utils.load_t5xxl` calls): a tiny T5EncoderModel.

The T5 keeps T5-XXL's width 4096: `Sd3TextEncodingStrategy.concat_encodings` pads the CLIP states
to a literal 4096 and concatenates them with T5's. Everything else (trainer, strategies, network
module) is the real code.
"""

from __future__ import annotations

import sys
import functools

try:  # imported as tests.e2e.run_sd3_sd_scripts
    from .run_flux_sd_scripts import tiny_loader, tiny_t5_loader
    from .run_sd_scripts import run_with_tiny_config
except ImportError:  # executed as a script (or imported by sd3_harness.py): this folder is on sys.path
    from run_flux_sd_scripts import tiny_loader, tiny_t5_loader  # type: ignore[no-redef]
    from run_sd_scripts import run_with_tiny_config  # type: ignore[no-redef]


def tiny_mmdit_factory(sd3_models, create_sd3_mmdit, num_joint: int):
    """`create_sd3_mmdit(params, attn_mode)` whose MMDiT has `num_joint` joint blocks at the width
    that `params.depth` (read from the checkpoint's width) gives."""
    import torch

    block_class = sd3_models.MMDiTBlock

    def create(params, attn_mode: str = "torch"):
        calls = []

        def recording_block(*args, **kwargs):
            calls.append((args, kwargs))
            return block_class(*args, **kwargs)

        sd3_models.MMDiTBlock = recording_block
        try:
            mmdit = create_sd3_mmdit(params, attn_mode)
        finally:
            sd3_models.MMDiTBlock = block_class
        args, kwargs = calls[0]
        blocks = [
            block_class(*args, **dict(kwargs, pre_only=i == num_joint - 1, x_block_self_attn=i in params.x_block_self_attn_layers))
            for i in range(num_joint)
        ]
        mmdit.joint_blocks = torch.nn.ModuleList(blocks)
        mmdit.num_blocks = num_joint
        return mmdit

    return create


def tiny_clip_loader(clip_config: dict, label: str):
    """sd3_utils.load_clip_l / load_clip_g's signature: a tiny CLIPTextModelWithProjection from the
    given file (the tiny runs always pass --clip_l / --clip_g; the checkpoint holds no encoders)."""
    from transformers import CLIPTextConfig, CLIPTextModelWithProjection

    load_file = tiny_loader(lambda: CLIPTextModelWithProjection(CLIPTextConfig(**clip_config)), label)

    def load(clip_path, dtype, device, disable_mmap=False, state_dict=None):
        if clip_path is None:
            raise RuntimeError(f"the tiny SD3 run needs a {label} file")
        return load_file(clip_path, dtype, device)

    return load


def install_tiny_models(cfg: dict) -> None:
    from library import sd3_models, sd3_utils

    sd3_models.create_sd3_mmdit = tiny_mmdit_factory(sd3_models, sd3_models.create_sd3_mmdit, cfg["mmdit"]["depth"])
    vae = cfg["vae"]
    shape = dict(ch=vae["ch"], ch_mult=tuple(vae["ch_mult"]), num_res_blocks=vae["num_res_blocks"])
    sd3_models.VAEEncoder = functools.partial(sd3_models.VAEEncoder, **shape)
    sd3_models.VAEDecoder = functools.partial(sd3_models.VAEDecoder, **shape)
    sd3_utils.load_clip_l = tiny_clip_loader(cfg["clip_l"], "CLIP-L")
    sd3_utils.load_clip_g = tiny_clip_loader(cfg["clip_g"], "CLIP-G")
    sd3_utils.flux_utils_load_t5xxl = tiny_t5_loader(cfg["t5"])


def main() -> None:
    run_with_tiny_config(sys.argv[1:], "run_sd3_sd_scripts.py", install_tiny_models)


if __name__ == "__main__":
    main()
