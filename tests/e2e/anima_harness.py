"""End-to-end harness: run the real sd-scripts `anima_train_network.py` on a tiny Anima.

Used two ways, like flux_harness.py next to it:

* imported by the pytest tests (standard library only), and
* executed as a script by the sd-scripts interpreter (``SD_SCRIPTS_PYTHON``)::

      python anima_harness.py build-tokenizers OUT_DIR
      python anima_harness.py build-model OUT_DIR TOKENIZER_DIR
      python anima_harness.py build-dataset OUT_DIR
      python anima_harness.py compare A.safetensors B.safetensors [OUT.json]

The tiny Anima is the one the upstream figures were recorded on
(tests/fixtures/upstream/anima/record_anima.py): upstream's `anima_models.Anima` with the real 28
blocks, AdaLN-LoRA, rope3d and the 6-layer LLM adapter, at width 32 (adapter 48, Qwen3 40), hence
the real LoRA names. sd-scripts builds the DiT and the Qwen-Image VAE from fixed configs;
``run_anima_sd_scripts.py`` narrows those from outside, so the training script runs unchanged.
The Qwen3 text encoder is a transformers folder (config, weights, tokenizer) that sd-scripts loads
as it is (``--qwen3 DIR``). Tokenizers are built offline with the ``tokenizers`` library: a small
byte-level BPE for Qwen3 and flux_harness's small Unigram T5 tokenizer for the adapter's target ids.

Nothing here is copied from sd-scripts.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Dict, List, Optional, Sequence

HERE = Path(__file__).resolve().parent
REPO_ROOT = HERE.parent.parent
RUNNER = HERE / "run_anima_sd_scripts.py"

try:  # imported as tests.e2e.anima_harness
    from . import flux_harness
    from . import sd_scripts_harness as sd_harness
except ImportError:  # executed as a script
    sys.path.insert(0, str(HERE))
    import flux_harness  # type: ignore[no-redef]
    import sd_scripts_harness as sd_harness  # type: ignore[no-redef]

# The recorder of the upstream Anima figures: its tiny model configs and its upstream spellings of
# block weights (network_reg_lrs per block, exclude_patterns for a threshold). Standard library only
# at import time.
sys.path.insert(0, str(REPO_ROOT / "tests" / "fixtures" / "upstream" / "anima"))
import record_anima  # noqa: E402

NUM_BLOCKS = record_anima.NUM_BLOCKS
NUM_ADAPTER_LAYERS = record_anima.NUM_ADAPTER_LAYERS
RESOLUTION = 64  # VAE x8 -> 8x8x16 latents -> 4x4 patches of 2x2
QWEN3_MAX_TOKENS = 16
T5_MAX_TOKENS = 16
QWEN3_DIRNAME = "qwen3_tiny"
T5_DIRNAME = flux_harness.T5_DIRNAME
DIT_FILE = "anima-tiny.safetensors"
VAE_FILE = "qwen_image_vae-tiny.safetensors"

# Qwen-Image VAE (qwen_image_autoencoder_kl.AutoencoderKLQwenImage): three spatial downsamplings as
# upstream's (len(dim_mult) - 1), z_dim 16 as the DiT's in_channels, narrow and one res block a level.
TINY_VAE = dict(base_dim=8, dim_mult=[1, 2, 2, 2], num_res_blocks=1)

QWEN3_WORDS = flux_harness.T5_WORDS


# ---------------------------------------------------------------------------------------------
# Block LR weights -> the equivalent upstream network_args (pure Python; used by the tests too)
# ---------------------------------------------------------------------------------------------
def upstream_block_lr_args(block: Sequence[float], adapter: Optional[Sequence[float]], unet_lr: float, threshold: float = 0.0) -> List[str]:
    """network_args for upstream networks.lora_anima meaning "LR = unet_lr * w per block (and LLM
    adapter layer)" and "no modules in a block whose w <= threshold" (one exclude_patterns regex
    per such block; added only when a block is pruned). The threshold defaults to 0, as
    block_lr_zero_threshold does: a weight of 0 means no modules, not modules frozen at their
    initial values. `adapter` None: the adapter is not trained."""
    adapter = list(adapter or [])
    block_keep = [w > threshold for w in block]
    adapter_keep = [w > threshold for w in adapter]
    kept_blocks = [i for i, k in enumerate(block_keep) if k]
    kept_layers = [j for j, k in enumerate(adapter_keep) if k]
    args = ["network_reg_lrs=" + record_anima.reg_lrs_for_block_weights(list(block), adapter, kept_blocks, kept_layers, unet_lr)]
    if not all(block_keep + adapter_keep):
        args.append("exclude_patterns=" + record_anima.excludes_for_threshold(block_keep, adapter_keep))
    return args


def block_label(key: str) -> str:
    """Block of a LoRA key: TE (Qwen3), A00..A05 (LLM adapter layers), B00..B27, or OTHER."""
    name = key.split(".", 1)[0]
    if name.startswith("lora_te_"):
        return "TE"
    for prefix, letter in (("lora_unet_llm_adapter_blocks_", "A"), ("lora_unet_blocks_", "B")):
        if name.startswith(prefix):
            return f"{letter}{int(name[len(prefix):].split('_')[0]):02d}"
    return "OTHER"


# ---------------------------------------------------------------------------------------------
# Pieces that run inside the sd-scripts interpreter (need torch & friends)
# ---------------------------------------------------------------------------------------------
def build_qwen3_tokenizer(out_dir: Path) -> Path:
    """A small byte-level BPE saved as a Qwen2 tokenizer (Qwen3's class), pad = eos = <|endoftext|>."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import AutoTokenizer, Qwen2TokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=320,
        special_tokens=["<|endoftext|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator([" ".join(QWEN3_WORDS)], trainer=trainer)
    fast = Qwen2TokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>", pad_token="<|endoftext|>", unk_token=None)
    path = Path(out_dir) / QWEN3_DIRNAME
    fast.save_pretrained(str(path))
    again = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
    ids = again("a photo of a cat").input_ids
    if not ids or max(ids) >= record_anima.TINY_QWEN3["vocab_size"] or again.pad_token_id != 0:
        raise RuntimeError(f"Qwen3 tokenizer round trip failed: {ids}, pad {again.pad_token_id}")
    return path


def build_tokenizers(out_dir: Path) -> Path:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    build_qwen3_tokenizer(out_dir)
    flux_harness.build_t5_tokenizer(out_dir)
    return out_dir


def tiny_config() -> Dict[str, Dict[str, object]]:
    """What run_anima_sd_scripts.py puts in place of sd-scripts' fixed DiT / adapter / VAE widths."""
    return {"anima": record_anima.TINY_ANIMA, "llm_adapter": record_anima.TINY_LLM_ADAPTER, "vae": TINY_VAE}


def build_model(out_dir: Path, tokenizer_dir: Path, seed: int = 0) -> Path:
    """Random tiny Anima DiT and Qwen-Image VAE safetensors, a Qwen3 folder, tiny_config.json."""
    import shutil

    import torch
    import transformers
    from safetensors.torch import save_file

    from library import qwen_image_autoencoder_kl

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)

    def contiguous(sd):
        return {k: v.detach().contiguous().clone() for k, v in sd.items()}

    dit = record_anima.build_tiny_anima()  # seeded by the recorder
    save_file(contiguous(dit.state_dict()), str(out_dir / DIT_FILE))

    torch.manual_seed(seed + 2)
    vae = qwen_image_autoencoder_kl.AutoencoderKLQwenImage(**TINY_VAE)
    save_file(contiguous(vae.state_dict()), str(out_dir / VAE_FILE))

    # Qwen3 as a transformers folder: anima_utils.load_qwen3_text_encoder loads a directory with
    # AutoModelForCausalLM / AutoTokenizer, so no sd-scripts config has to change for it.
    torch.manual_seed(seed + 1)
    qwen3 = transformers.Qwen3ForCausalLM(transformers.Qwen3Config(**record_anima.TINY_QWEN3))
    qwen3.save_pretrained(str(out_dir / QWEN3_DIRNAME))
    for item in (Path(tokenizer_dir) / QWEN3_DIRNAME).iterdir():
        shutil.copy(item, out_dir / QWEN3_DIRNAME / item.name)

    (out_dir / "tiny_config.json").write_text(json.dumps(tiny_config(), indent=1))
    return out_dir


def build_dataset(out_dir: Path) -> Path:
    return sd_harness.build_dataset(Path(out_dir))


def compare_files(a: str, b: str) -> dict:
    return sd_harness.compare_files_by_block(a, b, block_label)


# ---------------------------------------------------------------------------------------------
# Driver side (standard library only)
# ---------------------------------------------------------------------------------------------
sd_scripts_dir = sd_harness.sd_scripts_dir
sd_python = sd_harness.sd_python
assert_same_files = sd_harness.assert_same_files
preset_weights = flux_harness.preset_weights


class AnimaWorkspace(sd_harness.RunnerWorkspace):
    """The tiny Anima model files, trained by anima_train_network.py."""

    harness = Path(__file__).resolve()
    runner = RUNNER
    script = "anima_train_network.py"
    model_dirname = "model_anima_tiny"
    last_tokenizer = T5_DIRNAME
    resolution = RESOLUTION

    def model_args(self) -> List[str]:
        return [
            "--pretrained_model_name_or_path", str(self.model / DIT_FILE),
            "--qwen3", str(self.model / QWEN3_DIRNAME),
            "--vae", str(self.model / VAE_FILE),
            "--t5_tokenizer_path", str(self.tokenizers / T5_DIRNAME),
            "--qwen3_max_token_length", str(QWEN3_MAX_TOKENS),
            "--t5_max_token_length", str(T5_MAX_TOKENS),
        ]


def _main(argv: List[str]) -> None:
    builders = {
        "build-tokenizers": lambda out: build_tokenizers(Path(out)),
        "build-model": lambda out, tokenizers: build_model(Path(out), Path(tokenizers)),
        "build-dataset": lambda out: build_dataset(Path(out)),
    }
    sd_harness.run_command_line(argv, builders, compare_files)


if __name__ == "__main__":
    _main(sys.argv[1:])
