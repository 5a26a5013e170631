"""lr_weights: LoRA/LoCon for sd-scripts with block-wise learning rates.

Use it as `--network_module lr_weights.lora`. The package imports only torch and safetensors.
"""

__version__ = "0.1.0"
