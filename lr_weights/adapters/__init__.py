"""One adapter layer and its math each: LoRA (fused), split (FLUX qkv), DyLoRA, the lycoris-lora bridge."""
