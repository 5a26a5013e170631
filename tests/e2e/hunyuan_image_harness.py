"""End-to-end harness: run the real sd-scripts `hunyuan_image_train_network.py` on a tiny HunyuanImage 2.1.

Used two ways, like flux_harness.py next to it:

* imported by the pytest tests (standard library only), and
* executed as a script by the sd-scripts interpreter (``SD_SCRIPTS_PYTHON``)::

      python hunyuan_image_harness.py build-tokenizers OUT_DIR
      python hunyuan_image_harness.py build-model OUT_DIR TOKENIZER_DIR
      python hunyuan_image_harness.py build-dataset OUT_DIR
      python hunyuan_image_harness.py compare A.safetensors B.safetensors [OUT.json]

The tiny DiT has the real block structure (20 double + 40 single blocks, hence the real LoRA
names) at hidden size 32. sd-scripts builds the DiT, the VAE, Qwen2.5-VL and byT5 from literals;
``run_hunyuan_image_sd_scripts.py`` shrinks them from outside, and the model files here are built
with the same patches, so the training script itself runs unchanged. One width stays real: byT5's
1472, which sd-scripts also writes as a literal for captions without quoted text (zero embeddings
of that width), so byT5 is 1472 wide but one layer deep. Tokenizers are built offline: a byte-level
BPE for Qwen2.5-VL (trained with the ``tokenizers`` library on the prompt template and the
captions, so that the template is the 34 tokens sd-scripts drops, as with the real tokenizer) and
the vocabulary-free ByT5Tokenizer. Half the captions quote text, so byT5 encodes them.

Nothing here is copied from sd-scripts.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Dict, List, Optional, Sequence

HERE = Path(__file__).resolve().parent
RUNNER = HERE / "run_hunyuan_image_sd_scripts.py"

try:  # imported as tests.e2e.hunyuan_image_harness
    from . import flux_harness as flux
    from . import sd_scripts_harness as sd_harness
except ImportError:  # executed as a script
    sys.path.insert(0, str(HERE))
    import flux_harness as flux  # type: ignore[no-redef]
    import sd_scripts_harness as sd_harness  # type: ignore[no-redef]

# ---------------------------------------------------------------------------------------------
# Tiny architecture. The runner reads these from <model dir>/tiny_config.json.
# ---------------------------------------------------------------------------------------------
RESOLUTION = 64  # the VAE downsamples x32 -> 2x2 latents of 64 channels -> 4 image tokens
NUM_DOUBLE = 20
NUM_SINGLE = 40
QWEN_DIRNAME = "Qwen_Qwen2.5-VL-7B-Instruct"  # sd-scripts reads <tokenizer_cache_dir>/<hub id, "/" -> "_">
BYT5_DIRNAME = "google_byt5-small"
QWEN_HIDDEN = 32
TEMPLATE_TOKENS = 34  # sd-scripts' PROMPT_TEMPLATE_ENCODE_START_IDX: the template tokens it drops
CAPTIONS = ('a sign that says "cat"', "a red car on a road", 'a poster with the text "hello world"', "a dog in the snow")

_QWEN_TEXT = dict(
    hidden_size=QWEN_HIDDEN,
    intermediate_size=64,
    num_attention_heads=2,
    num_key_value_heads=1,
    num_hidden_layers=3,  # sd-scripts reads hidden_states[-3]
    max_window_layers=3,
    layer_types=["full_attention"] * 3,
    rope_scaling={"mrope_section": [2, 3, 3], "rope_type": "default", "type": "default"},  # sums to head_dim / 2
    vocab_size=None,  # set from the tokenizer at build time
    tie_word_embeddings=False,
)
TINY_CONFIG: Dict[str, Dict[str, object]] = {
    "dit": dict(
        hidden_size=32,
        heads_num=2,
        rope_dim_list=[8, 8],  # sums to hidden_size / heads_num, as upstream's [64, 64]
        mlp_width_ratio=4,  # upstream's literal (only split_qkv's dims read it here)
        byt5_mapper_dim=32,  # upstream: 2048
    ),
    "vae": dict(
        block_out_channels=[32, 32, 32, 32, 32, 128],  # six levels = x32, as upstream; last % (2 * 64 latent channels) == 0
        num_res_blocks=1,
    ),
    "qwen": dict(
        _QWEN_TEXT,
        text_config=dict(_QWEN_TEXT),
        vision_config=dict(depth=1, hidden_size=16, intermediate_size=32, num_heads=2, out_hidden_size=QWEN_HIDDEN, fullatt_block_indexes=[0]),
    ),
    "byt5": dict(
        vocab_size=384,  # ByT5Tokenizer's; upstream's loader adds its color/font tokens on top
        d_model=1472,  # kept: see the module docstring
        d_kv=8,
        d_ff=64,
        num_heads=2,
        num_layers=1,
        num_decoder_layers=1,
        feed_forward_proj="gated-gelu",
        relative_attention_num_buckets=32,
        tie_word_embeddings=False,
    ),
}


# ---------------------------------------------------------------------------------------------
# Block LR weights -> the equivalent upstream network_args (pure Python; used by the tests too)
# ---------------------------------------------------------------------------------------------
def upstream_block_lr_args(double: Sequence[float], single: Sequence[float], unet_lr: float, threshold: Optional[float] = None) -> List[str]:
    """network_args for upstream networks.lora_hunyuan_image that mean "LR = unet_lr * w per block"
    and, with a threshold, "no modules in blocks whose w <= threshold".

    The LoRA names are lora_flux's (lora_unet_double_blocks_N_..., lora_unet_single_blocks_N_...),
    so FLUX's network_reg_lrs spelling (its first arg) is this family's too. lora_hunyuan_image has
    no train_*_block_indices: a pruned block gets dim 0 through network_reg_dims instead (upstream
    takes the first regex that matches and creates no module of dim 0)."""
    args = [flux.upstream_block_lr_args(double, single, unet_lr)[0]]
    if threshold is not None:
        pruned = [f"lora_unet_double_blocks_{i}_=0" for i, w in enumerate(double) if w <= threshold]
        pruned += [f"lora_unet_single_blocks_{i}_=0" for i, w in enumerate(single) if w <= threshold]
        if pruned:
            args.append("network_reg_dims=" + ",".join(pruned))
    return args


def split_qkv_parts(lora_name: str) -> int:
    """How many parts split_qkv gives a module (upstream's name tests: double blocks' qkv in q, k, v;
    single blocks' linear1 in q, k, v and the MLP input); 1 for the others."""
    if "double" in lora_name and "qkv" in lora_name:
        return 3
    if "single" in lora_name and "linear1" in lora_name:
        return 4
    return 1


# ---------------------------------------------------------------------------------------------
# Pieces that run inside the sd-scripts interpreter (need torch & friends)
# ---------------------------------------------------------------------------------------------
QWEN_TEMPLATE = (
    "<|im_start|>system\nDescribe the image by detailing the color, shape, size, texture, quantity, text, "
    "spatial relationships of the objects and background:<|im_end|>\n<|im_start|>user\n{}<|im_end|>"
)  # the words of sd-scripts' template: the BPE learns them as single tokens
QWEN_SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]


def build_qwen_tokenizer(out_dir: Path) -> Path:
    """A small offline byte-level BPE saved as a Qwen2Tokenizer (vocab.json + merges.txt)."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import Qwen2Tokenizer

    raw = Path(out_dir) / "_raw_qwen_bpe"
    raw.mkdir(parents=True, exist_ok=True)
    corpus = [QWEN_TEMPLATE.format(c) for c in CAPTIONS] * 8 + list(flux.T5_WORDS) * 4
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(
        vocab_size=1000, special_tokens=QWEN_SPECIAL, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False
    )
    bpe.train_from_iterator(corpus, trainer)
    bpe.model.save(str(raw))
    tok = Qwen2Tokenizer(
        vocab_file=str(raw / "vocab.json"),
        merges_file=str(raw / "merges.txt"),
        unk_token="<|endoftext|>",
        eos_token="<|endoftext|>",
        pad_token="<|endoftext|>",
        additional_special_tokens=QWEN_SPECIAL[1:],
    )
    path = Path(out_dir) / QWEN_DIRNAME
    tok.save_pretrained(str(path))
    again = Qwen2Tokenizer.from_pretrained(str(path))
    ids = again(QWEN_TEMPLATE.format("a dog"))["input_ids"]
    prefix = QWEN_TEMPLATE.split("{}")[0]
    if len(again(prefix)["input_ids"]) != TEMPLATE_TOKENS or ids[0] != again.convert_tokens_to_ids("<|im_start|>"):
        raise RuntimeError(f"Qwen tokenizer: the template is {len(again(prefix)['input_ids'])} tokens, not {TEMPLATE_TOKENS}: {ids}")
    return path


def build_tokenizers(out_dir: Path) -> Path:
    from transformers import ByT5Tokenizer

    out_dir = Path(out_dir)
    build_qwen_tokenizer(out_dir)
    ByT5Tokenizer().save_pretrained(str(out_dir / BYT5_DIRNAME))
    return out_dir


def _runner():
    sys.path.insert(0, str(HERE))
    import run_hunyuan_image_sd_scripts as runner  # the same shrinking the trainer gets

    return runner


def tiny_config(tokenizer_dir: Path) -> dict:
    from transformers import Qwen2Tokenizer

    cfg = json.loads(json.dumps(TINY_CONFIG))
    vocab = len(Qwen2Tokenizer.from_pretrained(str(Path(tokenizer_dir) / QWEN_DIRNAME)))
    cfg["qwen"]["vocab_size"] = cfg["qwen"]["text_config"]["vocab_size"] = vocab
    cfg["tokenizer_dir"] = str(Path(tokenizer_dir).resolve())
    return cfg


def _qwen_file_state_dict(model) -> dict:
    """transformers' Qwen2.5-VL keys -> the released checkpoint's (model.*, visual.*, lm_head.*),
    which sd-scripts' loader renames back."""
    out = {}
    for key, value in model.state_dict().items():
        if key.startswith("model.language_model."):
            key = "model." + key[len("model.language_model.") :]
        elif key.startswith("model.visual."):
            key = "visual." + key[len("model.visual.") :]
        out[key] = value
    return out


def build_model(out_dir: Path, tokenizer_dir: Path, seed: int = 0) -> Path:
    """Random tiny DiT, VAE, Qwen2.5-VL and byT5 safetensors (the layouts sd-scripts loads) + tiny_config.json."""
    import torch
    from safetensors.torch import save_file
    from transformers import ByT5Tokenizer, Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration, T5Config, T5ForConditionalGeneration

    from library import hunyuan_image_models, hunyuan_image_text_encoder, hunyuan_image_vae

    runner = _runner()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    cfg = tiny_config(tokenizer_dir)
    torch.manual_seed(seed)
    dit = runner.build_tiny_dit(cfg, lambda: hunyuan_image_models.HYImageDiffusionTransformer(attn_mode="torch"))
    vae = runner.build_tiny_vae(cfg, hunyuan_image_vae.HunyuanVAE2D)
    qwen = Qwen2_5_VLForConditionalGeneration(Qwen2_5_VLConfig(**cfg["qwen"]))
    byt5 = T5ForConditionalGeneration(T5Config(**cfg["byt5"])).get_encoder()
    hunyuan_image_text_encoder.add_special_token(ByT5Tokenizer.from_pretrained(str(Path(tokenizer_dir) / BYT5_DIRNAME)), byt5)

    def contiguous(sd):
        return {k: v.detach().contiguous().clone() for k, v in sd.items()}

    byt5_sd = {("shared.weight" if k == "embed_tokens.weight" else "encoder." + k): v for k, v in byt5.state_dict().items()}
    save_file(contiguous(dit.state_dict()), str(out_dir / "hunyuanimage2.1-tiny.safetensors"))
    save_file(contiguous(vae.state_dict()), str(out_dir / "vae.safetensors"))
    save_file(contiguous(_qwen_file_state_dict(qwen)), str(out_dir / "qwen2.5-vl.safetensors"))
    save_file(contiguous(byt5_sd), str(out_dir / "byt5.safetensors"))
    (out_dir / "tiny_config.json").write_text(json.dumps(cfg, indent=1))
    return out_dir


def build_dataset(out_dir: Path) -> Path:
    return sd_harness.build_dataset(Path(out_dir), captions=CAPTIONS)


def scale_split_alphas(src: Path, dst: Path) -> Path:
    """A copy of an upstream split_qkv file with lr_weights' alpha convention: both store each
    layer's parts merged (down stacked, up block-diagonal), upstream with each part's alpha,
    lr_weights with alpha x parts (docs/flux.md, item 3), so that the merged file applies what was
    trained. Everything else is left as it is."""
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    tensors = load_file(str(src))
    with safe_open(str(src), "pt") as handle:
        metadata = handle.metadata()
    for key in list(tensors):
        name, _, kind = key.partition(".")
        if kind == "alpha":
            tensors[key] = tensors[key] * split_qkv_parts(name)
    save_file(tensors, str(dst), metadata=metadata)
    return Path(dst)


# ---------------------------------------------------------------------------------------------
# Driver side (standard library only)
# ---------------------------------------------------------------------------------------------
class HunyuanImageWorkspace(sd_harness.RunnerWorkspace):
    """The tiny HunyuanImage files, trained by hunyuan_image_train_network.py."""

    harness = Path(__file__).resolve()
    runner = RUNNER
    script = "hunyuan_image_train_network.py"
    model_dirname = "model_hunyuan_image_tiny"
    last_tokenizer = BYT5_DIRNAME
    resolution = RESOLUTION

    def model_args(self) -> List[str]:
        return [
            "--tokenizer_cache_dir", str(self.tokenizers),
            "--pretrained_model_name_or_path", str(self.model / "hunyuanimage2.1-tiny.safetensors"),
            "--text_encoder", str(self.model / "qwen2.5-vl.safetensors"),
            "--byt5", str(self.model / "byt5.safetensors"),
            "--vae", str(self.model / "vae.safetensors"),
            "--network_train_unet_only",
            # The text encoders are never trained for this family. On disk: sd-scripts' in-memory
            # cache keeps ocr_mask as a numpy scalar, which its collate cannot stack.
            "--cache_text_encoder_outputs_to_disk",
            "--text_encoder_cpu",
        ]

    def with_split_alphas_scaled(self, upstream_file: Path) -> Path:
        """scale_split_alphas, run by the sd-scripts interpreter."""
        dst = Path(upstream_file).with_name(Path(upstream_file).stem + "__alpha_x_parts.safetensors")
        self.call_harness(["scale-split-alphas", str(upstream_file), str(dst)])
        return dst


def _main(argv: List[str]) -> None:
    builders = {
        "build-tokenizers": lambda out: build_tokenizers(Path(out)),
        "build-model": lambda out, tokenizers: build_model(Path(out), Path(tokenizers)),
        "build-dataset": lambda out: build_dataset(Path(out)),
        "scale-split-alphas": lambda src, dst: scale_split_alphas(Path(src), Path(dst)),
    }
    sd_harness.run_command_line(argv, builders, flux.compare_files)


if __name__ == "__main__":
    _main(sys.argv[1:])
