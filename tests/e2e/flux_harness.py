"""End-to-end harness: run the real sd-scripts `flux_train_network.py` on a tiny FLUX.1.

Used two ways, like sd_scripts_harness.py next to it:

* imported by the pytest tests (standard library only), and
* executed as a script by the sd-scripts interpreter (``SD_SCRIPTS_PYTHON``)::

      python flux_harness.py build-tokenizers OUT_DIR
      python flux_harness.py build-model OUT_DIR
      python flux_harness.py build-dataset OUT_DIR
      python flux_harness.py compare A.safetensors B.safetensors [OUT.json]

The tiny FLUX has the real block structure (19 double + 38 single blocks, guidance_in as in
FLUX.1-dev, hence the real LoRA names) at hidden size 32. sd-scripts reads the block counts from
the checkpoint but the widths from ``flux_models.configs``, and builds CLIP-L, T5-XXL and the AE
from fixed configs; ``run_flux_sd_scripts.py`` overrides those from outside, so the training
script itself runs unchanged. Tokenizers are built offline: CLIP's BPE from the vocabulary that
ships with open_clip_torch (as sd_scripts_harness does) and a small Unigram T5 tokenizer made
with the ``tokenizers`` library.

Nothing here is copied from sd-scripts.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Callable, Dict, List, Sequence, Tuple

HERE = Path(__file__).resolve().parent
REPO_ROOT = HERE.parent.parent
RUNNER = HERE / "run_flux_sd_scripts.py"

try:  # imported as tests.e2e.flux_harness
    from . import sd_scripts_harness as sd_harness
except ImportError:  # executed as a script
    sys.path.insert(0, str(HERE))
    import sd_scripts_harness as sd_harness  # type: ignore[no-redef]

# ---------------------------------------------------------------------------------------------
# Tiny architecture. The runner reads these from <model dir>/tiny_config.json.
# ---------------------------------------------------------------------------------------------
RESOLUTION = 64  # AE downsamples x8 -> 8x8x16 latents -> 4x4 packed tokens of 64 channels
T5_MAX_TOKENS = 32
CLIP_HIDDEN = 32
T5_D_MODEL = 48
T5_DIRNAME = "google_t5-v1_1-xxl"  # sd-scripts reads <tokenizer_cache_dir>/google_t5-v1_1-xxl
NUM_DOUBLE = 19
NUM_SINGLE = 38

TINY_CONFIG: Dict[str, Dict[str, object]] = {
    "flux": dict(
        in_channels=64,  # 16 latent channels x 2x2 packing, as FLUX.1
        vec_in_dim=CLIP_HIDDEN,  # CLIP-L pooled output
        context_in_dim=T5_D_MODEL,  # T5 hidden states
        hidden_size=32,
        mlp_ratio=4.0,
        num_heads=2,
        depth=NUM_DOUBLE,
        depth_single_blocks=NUM_SINGLE,
        axes_dim=[4, 6, 6],  # sums to hidden_size / num_heads
        theta=10_000,
        qkv_bias=True,
        guidance_embed=True,  # "dev": the checkpoint has guidance_in
    ),
    "ae": dict(
        resolution=RESOLUTION,
        in_channels=3,
        ch=32,
        out_ch=3,
        ch_mult=[1, 1, 1, 1],  # three downsamplings, as FLUX's AE
        num_res_blocks=1,
        z_channels=16,
        scale_factor=0.3611,
        shift_factor=0.1159,
    ),
    "clip": dict(
        vocab_size=49408,
        hidden_size=CLIP_HIDDEN,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        max_position_embeddings=77,
        hidden_act="quick_gelu",
        projection_dim=CLIP_HIDDEN,
        # As sd-scripts' CLIP-L config: eos id 2 selects the legacy argmax pooling.
        bos_token_id=0,
        eos_token_id=2,
        pad_token_id=1,
    ),
    "t5": dict(
        vocab_size=None,  # set from the tokenizer at build time
        d_model=T5_D_MODEL,
        d_kv=24,
        d_ff=64,
        num_layers=2,
        num_heads=2,
        feed_forward_proj="gated-gelu",  # T5DenseGatedActDense, as T5-XXL v1.1
        dense_act_fn="gelu_new",
        dropout_rate=0.0,
        relative_attention_num_buckets=32,
        relative_attention_max_distance=128,
        is_encoder_decoder=False,
        use_cache=False,
        pad_token_id=0,
        eos_token_id=1,
        decoder_start_token_id=0,
    ),
}


# ---------------------------------------------------------------------------------------------
# Block LR weights -> the equivalent upstream network_args (pure Python; used by the tests too)
# ---------------------------------------------------------------------------------------------
def preset_weights(spec: str, length: int) -> List[float]:
    """sd-scripts' block LR presets (networks/lora.py get_block_lr_weight) over `length` blocks.

    The formulas are recorded from upstream in tests/fixtures/upstream/flux/cases/f30-f32 (the
    tests there check that this function reproduces them)."""
    name, _, offset = spec.partition("+")
    base = float(offset) if offset else 0.0
    n = length - 1
    if name == "sine":
        return [math.sin(math.pi * (i / n) / 2) + base for i in range(length)]
    if name == "cosine":
        return [math.sin(math.pi * (i / n) / 2) + base for i in reversed(range(length))]
    if name == "linear":
        return [i / n + base for i in range(length)]
    if name == "reverse_linear":
        return [i / n + base for i in reversed(range(length))]
    if name == "zeros":
        return [0.0 + base] * length
    raise ValueError(f"unknown preset {spec!r}")


def upstream_block_lr_args(
    double: Sequence[float], single: Sequence[float], unet_lr: float, threshold: float = 0.0
) -> List[str]:
    """network_args for upstream networks.lora_flux that mean "LR = unet_lr * w per block" and
    "no modules in blocks whose w <= threshold" (the block indices; added only when a block is
    pruned). The threshold defaults to 0, as block_lr_zero_threshold does: a weight of 0 (e.g.
    block 0 of `linear`) means no modules, not modules frozen at their initial values."""
    pairs = [f"lora_unet_double_blocks_{i}_={unet_lr * w!r}" for i, w in enumerate(double)]
    pairs += [f"lora_unet_single_blocks_{i}_={unet_lr * w!r}" for i, w in enumerate(single)]
    args = ["network_reg_lrs=" + ",".join(pairs)]
    if any(w <= threshold for w in list(double) + list(single)):

        def kept(ws: Sequence[float]) -> str:
            idx = [str(i) for i, w in enumerate(ws) if w > threshold]
            return ",".join(idx) if idx else "none"

        args += [f"train_double_block_indices={kept(double)}", f"train_single_block_indices={kept(single)}"]
    return args


def upstream_block_dims_args(double_dims: Sequence[int], single_dims: Sequence[int]) -> List[str]:
    """Per-block dims as upstream network_reg_dims (one regex per block; alpha stays network_alpha)."""
    pairs = [f"lora_unet_double_blocks_{i}_={d}" for i, d in enumerate(double_dims)]
    pairs += [f"lora_unet_single_blocks_{i}_={d}" for i, d in enumerate(single_dims)]
    return ["network_reg_dims=" + ",".join(pairs)]


def upstream_lbw_args(weights: Sequence[float], unet_lr: float, te_lr: float) -> List[str]:
    """LBW's 61-value FLUX vector (CLIP, T5, IN, D00-D18, S00-S37, OUT) as upstream network_reg_lrs:
    CLIP scales the CLIP-L LR, T5 the T5 LR, IN the in_dims modules, D/S the blocks (OUT, the final
    layer, has no LoRA modules)."""
    if len(weights) != 3 + NUM_DOUBLE + NUM_SINGLE + 1:
        raise ValueError(f"expected 61 weights, got {len(weights)}")
    clip, t5, inw = weights[0], weights[1], weights[2]
    double, single = weights[3 : 3 + NUM_DOUBLE], weights[3 + NUM_DOUBLE : 3 + NUM_DOUBLE + NUM_SINGLE]
    pairs = [f"lora_te1_={te_lr * clip!r}", f"lora_te3_={te_lr * t5!r}"]
    pairs.append(f"lora_unet_(img_in|time_in|vector_in|guidance_in|txt_in)={unet_lr * inw!r}")
    pairs += [f"lora_unet_double_blocks_{i}_={unet_lr * w!r}" for i, w in enumerate(double)]
    pairs += [f"lora_unet_single_blocks_{i}_={unet_lr * w!r}" for i, w in enumerate(single)]
    return ["network_reg_lrs=" + ",".join(pairs)]


# ---------------------------------------------------------------------------------------------
# Pieces that run inside the sd-scripts interpreter (need torch & friends)
# ---------------------------------------------------------------------------------------------
T5_WORDS = (
    "a photo of cat red car on road painting tree dog in the snow an image with and sky "
    "blue green house person standing near water field light dark white black small big"
).split()


def unigram_pieces(specials: Sequence[str]) -> List[Tuple[str, float]]:
    """Unigram vocabulary for a small offline SentencePiece-style tokenizer: `specials` first (ids
    0, 1, ...), then the caption words (with and without the word-start mark) and single characters,
    so every caption the harness writes tokenizes without <unk>."""
    pieces = [(special, 0.0) for special in specials]
    seen = {p for p, _ in pieces}
    for word in T5_WORDS:
        for piece in ("\u2581" + word, word):
            if piece not in seen:
                pieces.append((piece, -float(len(pieces))))
                seen.add(piece)
    for ch in "abcdefghijklmnopqrstuvwxyz0123456789.,!?'-":
        for piece in (ch, "\u2581" + ch):
            if piece not in seen:
                pieces.append((piece, -100.0 - len(pieces)))
                seen.add(piece)
    pieces.append(("\u2581", -200.0))
    return pieces


def build_t5_tokenizer(out_dir: Path) -> Path:
    """A small offline T5 tokenizer (Unigram + Metaspace, like T5's) saved where sd-scripts looks."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
    from transformers import T5TokenizerFast

    pieces = unigram_pieces(("<pad>", "</s>", "<unk>"))
    tok = Tokenizer(models.Unigram(pieces, unk_id=2, byte_fallback=False))
    tok.normalizer = normalizers.NFKC()
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="always")
    tok.decoder = decoders.Metaspace(replacement="\u2581", prepend_scheme="always")
    tok.post_processor = processors.TemplateProcessing(single="$A </s>", pair="$A </s> $B </s>", special_tokens=[("</s>", 1)])
    fast = T5TokenizerFast(tokenizer_object=tok, eos_token="</s>", unk_token="<unk>", pad_token="<pad>", extra_ids=100)
    path = Path(out_dir) / T5_DIRNAME
    fast.save_pretrained(str(path))
    again = T5TokenizerFast.from_pretrained(str(path))
    ids = again("a photo of a cat").input_ids
    if ids[-1] != 1 or 2 in ids:
        raise RuntimeError(f"T5 tokenizer round trip failed: {ids}")
    return path


def build_tokenizers(out_dir: Path) -> Path:
    out_dir = Path(out_dir)
    sd_harness.build_tokenizers(out_dir)  # CLIP-L BPE in openai_clip-vit-large-patch14
    build_t5_tokenizer(out_dir)
    return out_dir


def tiny_config(tokenizer_dir: Path) -> Dict[str, Dict[str, object]]:
    from transformers import T5TokenizerFast

    cfg = json.loads(json.dumps(TINY_CONFIG))
    cfg["t5"]["vocab_size"] = len(T5TokenizerFast.from_pretrained(str(Path(tokenizer_dir) / T5_DIRNAME)))
    return cfg


def tiny_ae(ae_cfg: Dict[str, object]):
    """sd-scripts' FLUX AutoEncoder (also Lumina 2's) at the tiny sizes of `ae_cfg` (TINY_CONFIG["ae"])."""
    from library import flux_models

    return flux_models.AutoEncoder(flux_models.AutoEncoderParams(**ae_cfg))


def save_model(model, path: Path, prefix: str = "", drop: Sequence[str] = ()) -> None:
    """A model's state dict as a safetensors file: keys with `prefix`, without `drop`."""
    from safetensors.torch import save_file

    tensors = {prefix + k: v.detach().contiguous().clone() for k, v in model.state_dict().items() if k not in drop}
    save_file(tensors, str(path))


def build_model(out_dir: Path, tokenizer_dir: Path, seed: int = 0) -> Path:
    """Random tiny FLUX.1-dev (BFL keys), CLIP-L, T5 and AE safetensors + tiny_config.json."""
    import torch
    from transformers import CLIPTextConfig, CLIPTextModel, T5Config, T5EncoderModel

    from library import flux_models

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    cfg = tiny_config(tokenizer_dir)
    torch.manual_seed(seed)
    flux = flux_models.Flux(flux_models.FluxParams(**cfg["flux"]))
    ae = tiny_ae(cfg["ae"])
    clip = CLIPTextModel(CLIPTextConfig(**cfg["clip"]))
    t5 = T5EncoderModel(T5Config(**cfg["t5"]))
    save_model(flux, out_dir / "flux1-tiny-dev.safetensors")
    save_model(ae, out_dir / "ae.safetensors")
    save_model(clip, out_dir / "clip_l.safetensors")
    save_model(t5, out_dir / "t5xxl.safetensors", drop=("encoder.embed_tokens.weight",))  # tied to "shared", as in T5-XXL files
    (out_dir / "tiny_config.json").write_text(json.dumps(cfg, indent=1))
    return out_dir


def build_dataset(out_dir: Path) -> Path:
    return sd_harness.build_dataset(Path(out_dir))


def block_label(key: str) -> str:
    """LBW-style block of a LoRA key: CLIP, T5, IN, D00..D18, S00..S37."""
    name = key.split(".", 1)[0]
    if name.startswith("lora_te1_"):
        return "CLIP"
    if name.startswith("lora_te3_"):
        return "T5"
    for kind, letter in (("double", "D"), ("single", "S")):
        prefix = f"lora_unet_{kind}_blocks_"
        if name.startswith(prefix):
            return f"{letter}{int(name[len(prefix):].split('_')[0]):02d}"
    return "IN"


def compare_files(a: str, b: str, block_of: Callable[[str], str] = block_label) -> dict:
    """sd_scripts_harness.compare_files plus the max abs diff per block (`block_of` a key) and per
    tensor kind."""
    return sd_harness.compare_files_by_block(a, b, block_of)


# ---------------------------------------------------------------------------------------------
# Driver side (standard library only)
# ---------------------------------------------------------------------------------------------
sd_scripts_dir = sd_harness.sd_scripts_dir
sd_python = sd_harness.sd_python
assert_same_files = sd_harness.assert_same_files


_env = sd_harness.candidate_first_env


class FluxWorkspace(sd_harness.RunnerWorkspace):
    """The tiny FLUX model files, trained by flux_train_network.py through run_flux_sd_scripts.py.
    SD3 (sd3_harness) shares its encoders and tokenizers: it changes the class attributes and the
    two argument lists."""

    harness = Path(__file__).resolve()
    runner = RUNNER
    script = "flux_train_network.py"
    model_dirname = "model_flux_tiny"
    last_tokenizer = T5_DIRNAME
    resolution = RESOLUTION

    def model_args(self) -> List[str]:
        return [
            "--pretrained_model_name_or_path", str(self.model / "flux1-tiny-dev.safetensors"),
            "--clip_l", str(self.model / "clip_l.safetensors"),
            "--t5xxl", str(self.model / "t5xxl.safetensors"),
            "--ae", str(self.model / "ae.safetensors"),
            "--tokenizer_cache_dir", str(self.tokenizers),
            "--t5xxl_max_token_length", str(T5_MAX_TOKENS),
        ]

    def family_args(self) -> List[str]:
        return ["--guidance_scale", "1.0", "--model_prediction_type", "raw", "--timestep_sampling", "sigmoid"]


def _main(argv: List[str]) -> None:
    builders = {
        "build-tokenizers": lambda out: build_tokenizers(Path(out)),
        "build-model": lambda out, tokenizers: build_model(Path(out), Path(tokenizers)),
        "build-dataset": lambda out: build_dataset(Path(out)),
    }
    sd_harness.run_command_line(argv, builders, compare_files)


if __name__ == "__main__":
    _main(sys.argv[1:])
