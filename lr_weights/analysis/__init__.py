"""`lr-weights analyze`: each block's effect on the denoiser's output, measured without images.

One job per file: `denoiser` (what the measure needs of a model), `tiny_denoisers` (the package's
tiny models as denoisers), `base_model` (loading a base model from disk), `checkpoint` (single-file
SD/SDXL checkpoints to diffusers' layout), `flux_text` (FLUX.1's CLIP-L and T5-XXL
files, local tokenizers, sd-scripts' conditioning), `deltas` (each module's ΔW from a LoRA/LyCORIS file),
`swap` (per-block ΔW merged into the model's weights in place), `batched` (per-block ΔW added
beside the layers per batch row), `forwards` (several configurations per forward), `measure`
(samples and the effects), `suggest` (blocks under a cut-off as LBW vector and network_args).
"""
