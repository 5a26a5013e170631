"""Run sd-scripts' hunyuan_image_train_network.py on the tiny HunyuanImage 2.1 that hunyuan_image_harness.py builds.

    python run_hunyuan_image_sd_scripts.py --tiny-config MODEL_DIR/tiny_config.json -- /path/to/sd-scripts/hunyuan_image_train_network.py --arg ...

sd-scripts builds every HunyuanImage model at its real size from literals inside constructors and
loaders. Before the training script runs (unchanged, as `__main__` in this process, from its own
directory) this wrapper shrinks them from outside, through the names those functions look up:

* the DiT (`hunyuan_image_models.create_model`): the block classes, embedders, refiner, ByT5
  mapper and final layer it constructs get the tiny widths (block counts stay 20 + 40), then the
  attributes its forward reads (hidden size, heads, RoPE split) are set to match;
* the VAE (`hunyuan_image_vae.load_vae`): the Encoder / Decoder it constructs get narrower channels, one res block per level
  (still 32x downsampling, 64 latent channels);
* Qwen2.5-VL and byT5 (`hunyuan_image_text_encoder.Qwen2_5_VLConfig` / `T5Config`): upstream's
  own config merged with the tiny sizes; its hub tokenizer look-ups (`Qwen2Tokenizer`,
  `AutoTokenizer`) read the offline tokenizers from the tokenizer cache folder instead;
* `lora_hunyuan_image.HunyuanImageLoRANetwork.get_qkv_mlp_split_dims` (split_qkv's 3584 / 14336):
  the tiny widths.

The loaders themselves (key renames, dtype casts, strict loading), the trainer, the strategies and
the network modules are the real code. hunyuan_image_harness.py builds the model files with the
same patches installed, so file and model agree by construction.
"""

from __future__ import annotations

import contextlib
import inspect
import os
import sys
from typing import Any, Callable, Dict, Iterator, Mapping

try:  # imported as tests.e2e.run_hunyuan_image_sd_scripts
    from .run_sd_scripts import run_with_tiny_config
except ImportError:  # executed as a script (or imported by the harness): this folder is on sys.path
    from run_sd_scripts import run_with_tiny_config  # type: ignore[no-redef]


def deep_merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> Dict[str, Any]:
    """`base` with `override`'s values; nested dicts merge, everything else is replaced."""
    out = dict(base)
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def with_arguments(factory: Callable[..., Any], **override: Any) -> Callable[..., Any]:
    """`factory` called with some named arguments replaced, however the caller passed them."""
    signature = inspect.signature(factory)

    def build(*args: Any, **kwargs: Any) -> Any:
        bound = signature.bind(*args, **kwargs)
        bound.arguments.update(override)
        return factory(*bound.args, **bound.kwargs)

    return build


@contextlib.contextmanager
def replaced(module: Any, names: Mapping[str, Any]) -> Iterator[None]:
    """Module globals swapped for the duration of a constructor call."""
    saved = {name: getattr(module, name) for name in names}
    for name, value in names.items():
        setattr(module, name, value)
    try:
        yield
    finally:
        for name, value in saved.items():
            setattr(module, name, value)


def tiny_dit_parts(cfg: dict) -> Dict[str, Any]:
    """The constructors HYImageDiffusionTransformer.__init__ looks up, at the tiny widths."""
    from library import hunyuan_image_models as models

    dit, hidden, heads = cfg["dit"], cfg["dit"]["hidden_size"], cfg["dit"]["heads_num"]
    return {
        "ByT5Mapper": with_arguments(
            models.ByT5Mapper, in_dim=cfg["byt5"]["d_model"], out_dim=dit["byt5_mapper_dim"], hidden_dim=dit["byt5_mapper_dim"], out_dim1=hidden
        ),
        "PatchEmbed2D": with_arguments(models.PatchEmbed2D, embed_dim=hidden),
        "SingleTokenRefiner": with_arguments(
            models.SingleTokenRefiner, in_channels=cfg["qwen"]["text_config"]["hidden_size"], hidden_size=hidden, heads_num=heads
        ),
        "TimestepEmbedder": with_arguments(models.TimestepEmbedder, hidden_size=hidden),
        "MMDoubleStreamBlock": with_arguments(models.MMDoubleStreamBlock, hidden_size=hidden, heads_num=heads),
        "MMSingleStreamBlock": with_arguments(models.MMSingleStreamBlock, hidden_size=hidden, heads_num=heads),
        "FinalLayer": with_arguments(models.FinalLayer, hidden_size=hidden),
    }


def build_tiny_dit(cfg: dict, build: Callable[[], Any]) -> Any:
    """`build()` (which constructs HYImageDiffusionTransformer somehow) with the tiny parts."""
    from library import hunyuan_image_models as models

    with replaced(models, tiny_dit_parts(cfg)):
        dit = build()
    dit.hidden_size = cfg["dit"]["hidden_size"]
    dit.heads_num = cfg["dit"]["heads_num"]
    dit.rope_dim_list = list(cfg["dit"]["rope_dim_list"])  # sums to the head dim, as upstream's [64, 64]
    return dit


def build_tiny_vae(cfg: dict, build: Callable[[], Any]) -> Any:
    """`build()` (which constructs HunyuanVAE2D somehow) with a tiny encoder and decoder."""
    from library import hunyuan_image_vae as vae_module

    vae = cfg["vae"]
    parts = {
        "Encoder": with_arguments(vae_module.Encoder, block_out_channels=tuple(vae["block_out_channels"]), num_res_blocks=vae["num_res_blocks"]),
        "Decoder": with_arguments(
            vae_module.Decoder, block_out_channels=list(reversed(vae["block_out_channels"])), num_res_blocks=vae["num_res_blocks"]
        ),
    }
    with replaced(vae_module, parts):
        return build()


class _LocalTokenizer:
    """A tokenizer class whose from_pretrained(hub id) reads <tokenizer dir>/<hub id, "/" -> "_">,
    where sd-scripts' own --tokenizer_cache_dir look-up finds it."""

    def __init__(self, real: Any, tokenizer_dir: str):
        self.real, self.tokenizer_dir = real, tokenizer_dir

    def from_pretrained(self, model_id: str, *args: Any, **kwargs: Any) -> Any:
        return self.real.from_pretrained(os.path.join(self.tokenizer_dir, model_id.replace("/", "_")))


def install_tiny_models(cfg: dict) -> None:
    import transformers

    from library import hunyuan_image_models, hunyuan_image_text_encoder, hunyuan_image_vae
    from networks import lora_hunyuan_image

    create_model = hunyuan_image_models.create_model
    hunyuan_image_models.create_model = lambda *a, **k: build_tiny_dit(cfg, lambda: create_model(*a, **k))
    load_vae = hunyuan_image_vae.load_vae
    hunyuan_image_vae.load_vae = lambda *a, **k: build_tiny_vae(cfg, lambda: load_vae(*a, **k))

    te = hunyuan_image_text_encoder
    te.Qwen2_5_VLConfig = lambda **upstream: transformers.Qwen2_5_VLConfig(**deep_merge(upstream, cfg["qwen"]))
    te.T5Config = lambda **upstream: transformers.T5Config(**deep_merge(upstream, cfg["byt5"]))
    te.Qwen2Tokenizer = _LocalTokenizer(transformers.Qwen2Tokenizer, cfg["tokenizer_dir"])
    te.AutoTokenizer = _LocalTokenizer(transformers.AutoTokenizer, cfg["tokenizer_dir"])

    hidden, mlp = cfg["dit"]["hidden_size"], int(cfg["dit"]["hidden_size"] * cfg["dit"]["mlp_width_ratio"])
    lora_hunyuan_image.HunyuanImageLoRANetwork.get_qkv_mlp_split_dims = classmethod(lambda cls: [hidden] * 3 + [mlp])
    print("LRW_E2E tiny HunyuanImage installed", flush=True)


def main() -> None:
    run_with_tiny_config(sys.argv[1:], "run_hunyuan_image_sd_scripts.py", install_tiny_models)


if __name__ == "__main__":
    main()
