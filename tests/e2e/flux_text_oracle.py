"""sd-scripts' FLUX.1 conditioning of tiny text encoders: the oracle of test_flux_text_parity.py.

    python flux_text_oracle.py SD_SCRIPTS_DIR FOLDER

Runs in sd-scripts' interpreter. FOLDER holds flow.safetensors (a flow model file),
clip_l.safetensors, t5xxl.safetensors, tokenizers/ (sd-scripts' --tokenizer_cache_dir layout) and
oracle_input.json ({"clip": CLIPTextConfig kwargs, "t5": T5Config kwargs, "prompts": [...]}).
The encoders are built at those sizes, CLIP with sd-scripts' CLIP-L config ids (eos id 2: its
argmax pooling), and given the files' tensors, in float64. Everything after is sd-scripts' own:
flux_train_network's FluxNetworkTrainer picks the tokenizers and T5 length (schnell or dev from the
flow model file) and the encoding strategy (apply_t5_attn_mask off, its default). Writes
FOLDER/upstream.safetensors: y (CLIP-L pooled), txt (T5 states), txt_ids.
"""

from __future__ import annotations

import argparse
import json
import os
import sys


def main(sd_scripts_dir: str, folder: str) -> None:
    sys.path.insert(0, sd_scripts_dir)
    os.chdir(sd_scripts_dir)
    import torch
    from safetensors.torch import load_file, save_file
    from transformers import CLIPTextConfig, CLIPTextModel, T5Config, T5EncoderModel

    import flux_train_network

    # float64, so the comparison is of the math, not of rounding; as the default dtype, since transformers
    # 4.x's CLIP builds its causal mask with torch.full at the default dtype.
    torch.set_default_dtype(torch.float64)
    with open(os.path.join(folder, "oracle_input.json"), encoding="utf-8") as handle:
        spec = json.load(handle)
    clip = CLIPTextModel(CLIPTextConfig(**dict(spec["clip"], bos_token_id=0, eos_token_id=2, pad_token_id=1))).eval()
    clip_info = clip.load_state_dict(load_file(os.path.join(folder, "clip_l.safetensors")), strict=False)
    t5 = T5EncoderModel(T5Config(**spec["t5"])).eval()
    t5_info = t5.load_state_dict(load_file(os.path.join(folder, "t5xxl.safetensors")), strict=False)
    # Only CLIP's position ids buffer and T5's tied input embedding (it is "shared") may be absent.
    if clip_info.unexpected_keys or set(clip_info.missing_keys) - {"text_model.embeddings.position_ids"}:
        raise RuntimeError(f"tiny CLIP-L mismatch: {clip_info}")
    if t5_info.unexpected_keys or set(t5_info.missing_keys) - {"encoder.embed_tokens.weight"}:
        raise RuntimeError(f"tiny T5 mismatch: {t5_info}")

    args = argparse.Namespace(
        model_type="flux", pretrained_model_name_or_path=os.path.join(folder, "flow.safetensors"), t5xxl_max_token_length=None,
        tokenizer_cache_dir=os.path.join(folder, "tokenizers"), apply_t5_attn_mask=False,
    )
    trainer = flux_train_network.FluxNetworkTrainer()
    tokenize = trainer.get_tokenize_strategy(args)
    encode = trainer.get_text_encoding_strategy(args)
    with torch.no_grad():
        y, txt, txt_ids, _ = encode.encode_tokens(tokenize, [clip, t5], tokenize.tokenize(spec["prompts"]))
    save_file({"y": y.contiguous(), "txt": txt.contiguous(), "txt_ids": txt_ids.contiguous()}, os.path.join(folder, "upstream.safetensors"))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
