"""Run sd-scripts' anima_train_network.py on the tiny Anima that anima_harness.py builds.

    python run_anima_sd_scripts.py --tiny-config MODEL_DIR/tiny_config.json -- /path/to/sd-scripts/anima_train_network.py --arg ...

sd-scripts builds the Anima DiT from a fixed config inside `anima_utils.load_anima_model`, the DiT
builds its LLM adapter 1024 wide, and `qwen_image_autoencoder_kl.load_vae` builds the VAE from a
fixed config. Before the training script runs (unchanged, as `__main__` in this process, from its
own directory) this wrapper narrows those classes, by the names the loaders look them up with:

* `anima_models.Anima`: the loader's config with tiny_config.json's "anima" values in place
  (widths, heads, AdaLN-LoRA rank, maximum latent size; the 28 blocks are the same);
* `anima_models.LLMAdapter`: built with the "llm_adapter" widths (its 6 layers as the DiT asks);
* `qwen_image_autoencoder_kl.AutoencoderKLQwenImage`: the "vae" widths.

The loaders themselves (checkpoint reading, key renaming, strict loading) and everything else
(trainer, strategies, Qwen3 from its folder, network module) are the real code.
"""

from __future__ import annotations

import sys

try:  # imported as tests.e2e.run_anima_sd_scripts
    from .run_sd_scripts import run_with_tiny_config
except ImportError:  # executed as a script: this folder is sys.path[0]
    from run_sd_scripts import run_with_tiny_config  # type: ignore[no-redef]

# The attention backend comes from the trainer's args, not from the tiny config.
TRAINER_CHOSEN = ("attn_mode", "split_attn")
UPSTREAM_ADAPTER_WIDTHS = (1024, 1024, 1024)


def narrowed(cls, overrides: dict):
    """A subclass of `cls` whose constructor takes `overrides` in place of the caller's keywords."""

    class Narrowed(cls):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **{**kwargs, **overrides})

    Narrowed.__name__ = Narrowed.__qualname__ = cls.__name__
    return Narrowed


def install_tiny_models(cfg: dict) -> None:
    from library import anima_models, qwen_image_autoencoder_kl

    real_adapter = anima_models.LLMAdapter

    def tiny_adapter(source_dim, target_dim, model_dim, **kwargs):
        if (source_dim, target_dim, model_dim) != UPSTREAM_ADAPTER_WIDTHS:
            raise RuntimeError(f"Anima builds its LLM adapter {(source_dim, target_dim, model_dim)} wide, not 1024: re-check this runner")
        return real_adapter(**{**kwargs, **cfg["llm_adapter"]})

    dit = {k: v for k, v in cfg["anima"].items() if k not in TRAINER_CHOSEN}
    anima_models.LLMAdapter = tiny_adapter
    anima_models.Anima = narrowed(anima_models.Anima, dit)
    vae_cls = qwen_image_autoencoder_kl.AutoencoderKLQwenImage
    qwen_image_autoencoder_kl.AutoencoderKLQwenImage = narrowed(vae_cls, cfg["vae"])
    print(f"LRW_E2E tiny Anima: {dit}, adapter {cfg['llm_adapter']}, VAE {cfg['vae']}", flush=True)


def main() -> None:
    run_with_tiny_config(sys.argv[1:], "run_anima_sd_scripts.py", install_tiny_models)


if __name__ == "__main__":
    main()
