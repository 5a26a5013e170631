"""End-to-end harness: run the real sd-scripts `lumina_train_network.py` on a tiny Lumina 2.

Used two ways, like flux_harness.py next to it:

* imported by the pytest tests (standard library only), and
* executed as a script by the sd-scripts interpreter (``SD_SCRIPTS_PYTHON``)::

      python lumina_harness.py build-tokenizers OUT_DIR
      python lumina_harness.py build-model OUT_DIR TOKENIZER_DIR
      python lumina_harness.py build-dataset OUT_DIR
      python lumina_harness.py compare A.safetensors B.safetensors [OUT.json]

The tiny Lumina 2 has the real block structure of the 2B model sd-scripts always builds
(NextDiT_2B_GQA_patch2_Adaln_Refiner: 26 layers, 2 context_refiner + 2 noise_refiner blocks,
grouped-query attention with qk norm, final_layer, hence the real LoRA names) at hidden size 32.
sd-scripts builds the NextDiT, Gemma2 2B and the FLUX AE from fixed configs;
``run_lumina_sd_scripts.py`` overrides those from outside, so the training script itself runs
unchanged. The AE is FLUX's tiny one (flux_harness.TINY_CONFIG["ae"]: 16 latent channels, x8).
The Gemma tokenizer is a small Unigram one made offline with the ``tokenizers`` library and saved as
a Hugging Face cache entry for google/gemma-2-2b under --tokenizer_cache_dir, which is where
sd-scripts' LuminaTokenizeStrategy loads it from (offline: HF_HUB_OFFLINE=1).

Nothing here is copied from sd-scripts.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Dict, List

HERE = Path(__file__).resolve().parent
RUNNER = HERE / "run_lumina_sd_scripts.py"

try:  # imported as tests.e2e.lumina_harness
    from . import flux_harness
    from . import sd_scripts_harness as sd_harness
except ImportError:  # executed as a script
    sys.path.insert(0, str(HERE))
    import flux_harness  # type: ignore[no-redef]
    import sd_scripts_harness as sd_harness  # type: ignore[no-redef]

# ---------------------------------------------------------------------------------------------
# Tiny architecture. The runner reads these from <model dir>/tiny_config.json.
# ---------------------------------------------------------------------------------------------
RESOLUTION = flux_harness.RESOLUTION  # AE x8 -> 8x8x16 latents -> 4x4 patches of 2x2
GEMMA_MAX_TOKENS = 16  # --gemma2_max_token_length (sd-scripts pads to it, a multiple of 8)
GEMMA_HIDDEN = 32  # == NextDiT cap_feat_dim
GEMMA_ID = "google/gemma-2-2b"  # what sd-scripts' LuminaTokenizeStrategy asks the HF cache for
GEMMA_CACHE_ENTRY = "models--" + GEMMA_ID.replace("/", "--")  # its folder in an HF cache
GEMMA_SNAPSHOT = "0" * 40  # the cache entry's (made-up) revision
ZERO_INIT_STD = 0.1  # what build_model draws for NextDiT's zero-initialised tensors
NUM_LAYERS = 26  # Lumina 2 2B
NUM_REFINERS = 2  # context_refiner and noise_refiner each

TINY_CONFIG: Dict[str, Dict[str, object]] = {
    # lumina_models.LuminaParams, as get_2b_config fills it, at width 32. The 2B factory takes the
    # refiner count and FFN rounding (multiple_of=256) from NextDiT's defaults, as for the real model.
    "lumina": dict(
        patch_size=2,
        in_channels=16,  # AE latent channels
        dim=32,
        n_layers=NUM_LAYERS,
        n_heads=2,
        n_kv_heads=1,  # grouped-query attention, as 2B (24 / 8)
        axes_dims=[4, 6, 6],  # sums to dim / n_heads
        axes_lens=[300, 512, 512],
        qk_norm=True,
        cap_feat_dim=GEMMA_HIDDEN,
    ),
    "ae": flux_harness.TINY_CONFIG["ae"],
    # transformers Gemma2Config: Gemma 2 2B's kinds of layers (GQA, soft-capping, sliding window
    # on alternate layers), two of them: sd-scripts reads hidden_states[-2].
    "gemma2": dict(
        vocab_size=None,  # set from the tokenizer at build time
        hidden_size=GEMMA_HIDDEN,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        head_dim=16,
        query_pre_attn_scalar=16,
        hidden_activation="gelu_pytorch_tanh",
        max_position_embeddings=256,
        sliding_window=8,
        attn_logit_softcapping=50.0,
        final_logit_softcapping=30.0,
        rms_norm_eps=1e-6,
        attention_dropout=0.0,
        pad_token_id=0,
        eos_token_id=1,
        bos_token_id=2,
    ),
}


# ---------------------------------------------------------------------------------------------
# Pieces that run inside the sd-scripts interpreter (need torch & friends)
# ---------------------------------------------------------------------------------------------
def gemma_cache_dir(tokenizer_dir: Path) -> Path:
    """The snapshot folder of the HF cache entry for google/gemma-2-2b under --tokenizer_cache_dir."""
    return Path(tokenizer_dir) / GEMMA_CACHE_ENTRY / "snapshots" / GEMMA_SNAPSHOT


def build_tokenizers(out_dir: Path) -> Path:
    """A small offline Gemma tokenizer (Unigram; spaces -> "\u2581" as Gemma's normalizer; <bos> first;
    Gemma's special ids pad 0, eos 1, bos 2, unk 3) as an HF cache entry for google/gemma-2-2b."""
    from tokenizers import Tokenizer, decoders, models, normalizers
    from transformers import AutoTokenizer, GemmaTokenizerFast

    pieces = flux_harness.unigram_pieces(("<pad>", "<eos>", "<bos>", "<unk>"))
    tok = Tokenizer(models.Unigram(pieces, unk_id=3, byte_fallback=False))
    tok.normalizer = normalizers.Replace(" ", "\u2581")
    tok.decoder = decoders.Replace("\u2581", " ")
    fast = GemmaTokenizerFast(tokenizer_object=tok, bos_token="<bos>", eos_token="<eos>", unk_token="<unk>", pad_token="<pad>")
    snapshot = gemma_cache_dir(out_dir)
    fast.save_pretrained(str(snapshot))
    refs = snapshot.parent.parent / "refs"
    refs.mkdir(parents=True, exist_ok=True)
    (refs / "main").write_text(GEMMA_SNAPSHOT)
    # Load it the way sd-scripts does (hub id + cache_dir, offline) and check the round trip.
    again = AutoTokenizer.from_pretrained(GEMMA_ID, cache_dir=str(out_dir))
    ids = again("a photo of a cat").input_ids
    if ids[0] != 2 or 3 in ids or len(ids) != 6:
        raise RuntimeError(f"Gemma tokenizer round trip failed: {ids}")
    return Path(out_dir)


def tiny_config(tokenizer_dir: Path) -> Dict[str, Dict[str, object]]:
    from transformers import AutoTokenizer

    cfg = json.loads(json.dumps(TINY_CONFIG))
    cfg["gemma2"]["vocab_size"] = len(AutoTokenizer.from_pretrained(GEMMA_ID, cache_dir=str(tokenizer_dir)))
    return cfg


def build_model(out_dir: Path, tokenizer_dir: Path, seed: int = 0) -> Path:
    """Random tiny Lumina 2 (NextDiT keys), Gemma2 and AE safetensors + tiny_config.json."""
    import torch
    from transformers import Gemma2Config, Gemma2Model

    from library import lumina_models

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    cfg = tiny_config(tokenizer_dir)
    torch.manual_seed(seed)
    lumina = lumina_models.NextDiT_2B_GQA_patch2_Adaln_Refiner(lumina_models.LuminaParams(**cfg["lumina"]))
    # NextDiT starts with zero final_layer, gates and modulations (a fresh model predicts 0, so no
    # gradient would reach the layers, refiners or Gemma2). A trained checkpoint has none of them.
    with torch.no_grad():
        for param in lumina.parameters():
            if not param.any():
                param.normal_(std=ZERO_INIT_STD)
    ae = flux_harness.tiny_ae(cfg["ae"])
    gemma2 = Gemma2Model(Gemma2Config(**cfg["gemma2"]))
    flux_harness.save_model(lumina, out_dir / "lumina2-tiny.safetensors")
    flux_harness.save_model(ae, out_dir / "ae.safetensors")
    flux_harness.save_model(gemma2, out_dir / "gemma2-tiny.safetensors")
    (out_dir / "tiny_config.json").write_text(json.dumps(cfg, indent=1))
    return out_dir


_NUMBERED = re.compile(r"^lora_unet_(layers|context_refiner|noise_refiner)_(\d+)_")


def block_label(key: str) -> str:
    """Block of a LoRA key: TE (Gemma2), IN (embedders), C0/C1, N0/N1, L00..L25, OUT (final_layer)."""
    name = key.split(".", 1)[0]
    if name.startswith("lora_te_"):
        return "TE"
    match = _NUMBERED.match(name)
    if match:
        kind, index = match.group(1), int(match.group(2))
        return {"layers": f"L{index:02d}", "context_refiner": f"C{index}", "noise_refiner": f"N{index}"}[kind]
    return "OUT" if name.startswith("lora_unet_final_layer") else "IN"


def untrained_blocks(path: str) -> List[str]:
    """Blocks whose lora_up tensors are all zero, i.e. still at their initial value (sd-scripts and
    lr_weights start lora_up at zero): no gradient reached them."""
    from safetensors.torch import load_file

    trained: Dict[str, bool] = {}
    for key, tensor in load_file(path).items():
        if ".lora_up." in key:
            block = block_label(key)
            trained[block] = trained.get(block, False) or bool(tensor.any())
    return sorted(block for block, moved in trained.items() if not moved)


def compare_files(a: str, b: str) -> dict:
    res = flux_harness.compare_files(a, b, block_label)
    res["untrained_blocks_in_a"] = untrained_blocks(a)
    return res


# ---------------------------------------------------------------------------------------------
# Driver side (standard library only)
# ---------------------------------------------------------------------------------------------
class LuminaWorkspace(sd_harness.RunnerWorkspace):
    """The tiny Lumina 2 model files, trained by lumina_train_network.py. Gemma2's LoRA trains at
    `learning_rate` (sd-scripts' default for --text_encoder_lr), the DiT's at `unet_lr`."""

    harness = Path(__file__).resolve()
    runner = RUNNER
    script = "lumina_train_network.py"
    model_dirname = "model_lumina_tiny"
    last_tokenizer = GEMMA_CACHE_ENTRY
    resolution = RESOLUTION

    def model_args(self) -> List[str]:
        return [
            "--pretrained_model_name_or_path", str(self.model / "lumina2-tiny.safetensors"),
            "--gemma2", str(self.model / "gemma2-tiny.safetensors"),
            "--ae", str(self.model / "ae.safetensors"),
            "--tokenizer_cache_dir", str(self.tokenizers),
            "--gemma2_max_token_length", str(GEMMA_MAX_TOKENS),
        ]

    def family_args(self) -> List[str]:
        return ["--model_prediction_type", "raw", "--timestep_sampling", "sigmoid"]


def _main(argv: List[str]) -> None:
    builders = {
        "build-tokenizers": lambda out: build_tokenizers(Path(out)),
        "build-model": lambda out, tokenizers: build_model(Path(out), Path(tokenizers)),
        "build-dataset": lambda out: sd_harness.build_dataset(Path(out)),
    }
    sd_harness.run_command_line(argv, builders, compare_files)


if __name__ == "__main__":
    _main(sys.argv[1:])
