"""The LyCORIS network: lycoris-lora's modules under lr_weights' host surface and block LRs.

`LycorisBlockNetwork` is a LoRANetwork whose modules are lycoris-lora modules (LoKr, LoHa, LoCon,
IA3, ...): optimizer groups per block, LoRA+, the host-era return type, the per-block table and
the text-encoder LR list are LoRANetwork's; what touches the modules' insides (saving, loading,
max-norm, merging, enabling) goes through lycoris-lora's own module methods.
"""

from __future__ import annotations

import logging
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import torch

from lr_weights import __version__
from lr_weights.errors import NetworkArgError
from lr_weights.files.io import atomic_write_bytes, is_safetensors_path, load_lora_file, save_lora_file
from lr_weights.files.loading import check_file_fits, log_load_info
from lr_weights.adapters.lycoris_library import delta_weight
from lr_weights.network.lora_network import LoRANetwork
from lr_weights.network.plans import ModulePlan
from lr_weights.network.table import ModuleFacts, block_table_json

logger = logging.getLogger(__name__)


class LycorisBlockNetwork(LoRANetwork):
    """lycoris-lora modules with per-block learning rates; built by lr_weights.lycoris."""

    def __init__(self, arch, plans: Sequence[ModulePlan], modules: Mapping[str, torch.nn.Module], options, multiplier: float = 1.0, algo: str = "lora", zero_dim_blocks: Sequence[int] = ()):
        if options.fa:
            raise NetworkArgError("fa", "1", "fa=0 with lr_weights.lycoris: LoRA-FA is a property of lr_weights.lora's own LoRA modules")

        def take(lora_name, layer, dim, alpha, **_ignored):  # the modules are built already, in lycoris' order
            return modules[lora_name]

        super().__init__(arch, plans, options, multiplier=multiplier, settings=None, module_factory=take)
        self.algo = algo
        self._zero_dims = tuple(zero_dim_blocks)
        self._enabled = True

    # ---- what differs from a plain LoRA ------------------------------------------------------

    def load_weights(self, file: str):
        """Load a LyCORIS file into the modules (non-strict, as lycoris.kohya); returns the load info.

        Shapes are checked first, so a file for another model, algorithm or dim fails with the names
        and shapes that disagree instead of a size-mismatch traceback from torch.
        """
        weights = load_lora_file(file)
        check_file_fits(
            file,
            weights,
            self.state_dict(),
            stranger="another algorithm or architecture?",
            remedy="Use --dim_from_weights to take the modules from the file, or the algo/dims it was trained with.",
            shared_suffixes=(".alpha",),  # a key of every algorithm: whether a file belongs is decided by the others
        )
        info = self.load_state_dict(weights, strict=False)
        log_load_info(logger, file, info)
        return info

    def save_weights(self, file: str, dtype: Optional[torch.dtype] = None, metadata: Optional[Mapping[str, str]] = None) -> None:
        """What lycoris.kohya saves (same tensors, keys and `sshs_model_hash`), plus the block table.

        Written atomically with the project's one writer; lycoris-lora computes the hash.
        """
        from lr_weights.adapters.lycoris_library import import_lycoris

        import_lycoris()
        from lycoris.utils import precalculate_safetensors_hashes

        tensors = {}
        for key, value in self.state_dict().items():
            value = value.detach().clone().to("cpu")
            tensors[key] = (value if dtype is None else value.to(dtype)).contiguous()
        if is_safetensors_path(file):
            from safetensors.torch import save

            metadata = dict(metadata or {})
            metadata["sshs_model_hash"] = precalculate_safetensors_hashes(tensors)
            metadata.setdefault("lr_weights_version", __version__)
            metadata.setdefault("lr_weights_blocks", block_table_json(self.block_table()))
            for key, value in metadata.items():
                if not isinstance(value, str):
                    raise NetworkArgError("metadata", f"{key}: {value!r}", "string values (safetensors stores strings only)")
            atomic_write_bytes(file, save(tensors, metadata))
            return
        save_lora_file(file, tensors)  # .pt/.ckpt: no metadata, no hashes; the same atomic writer

    def apply_max_norm_regularization(self, max_norm_value: float, device) -> Tuple[int, float, float]:
        """lycoris-lora's per-module max-norm (`apply_max_norm`), summed as lycoris.kohya does."""
        keys_scaled = 0
        norms = []
        for module in self.unet_loras + self.text_encoder_loras:
            scaled, norm = module.apply_max_norm(max_norm_value, device)
            if scaled is None:
                continue
            norms.append(float(norm))
            keys_scaled += int(scaled)
        if keys_scaled == 0:
            return 0, 0.0, 0.0
        return keys_scaled, sum(norms) / len(norms), max(norms)

    def set_enabled(self, is_enabled: bool) -> None:
        """lycoris-lora modules have no switch; a disabled network runs at multiplier 0."""
        self._enabled = bool(is_enabled)
        for module in self.all_loras:
            module.multiplier = self.multiplier if is_enabled else 0.0

    def set_multiplier(self, multiplier: float) -> None:
        self.multiplier = multiplier
        for module in self.all_loras:
            module.multiplier = multiplier if self._enabled else 0.0

    def merge_to(self, text_encoder=None, unet=None, weights_sd: Optional[Mapping[str, torch.Tensor]] = None, dtype=None, device=None) -> None:
        """Add multiplier x ΔW of every module into its base layer, ΔW as the module's forward applies it
        (lycoris_library.delta_weight; lycoris.kohya merges at multiplier 1 whatever the multiplier).

        The modules must hold the weights (`create_network_from_weights` builds them from the file);
        parts with no key in `weights_sd` are left alone, as lycoris.kohya does.
        """
        te_prefixes = tuple(prefix for prefix, _ in self.arch.text_encoder_prefixes)
        keys = list(weights_sd or {})
        # whether the file has keys of the denoiser (True) and of the text encoders (False)
        parts = {True: any(self.arch.is_denoiser_name(k) for k in keys), False: any(k.startswith(te_prefixes) for k in keys)}
        merged = 0
        for module in self.all_loras:
            if weights_sd is not None and not parts[self.arch.is_denoiser_name(module.lora_name)]:
                continue
            layer = module.org_module[0]
            target = layer.weight.device if device is None else device
            module.to(target)
            diff, bias_diff = delta_weight(module, self.multiplier)
            with torch.no_grad():
                weight = layer.weight.detach().to(target, torch.float32) + diff.to(target, torch.float32)
                layer.weight.data = weight.to(dtype or layer.weight.dtype).to(layer.weight.device)
                if bias_diff is not None and layer.bias is not None:
                    layer.bias.data = (layer.bias.detach().to(target, torch.float32) + bias_diff.to(target, torch.float32)).to(layer.bias.dtype).to(layer.bias.device)
            merged += 1
        logger.info("merged %d LyCORIS modules into the base weights", merged)

    # ---- introspection -----------------------------------------------------------------------

    def module_facts(self) -> List[ModuleFacts]:
        facts = []
        for m in self.all_loras:
            dim = int(getattr(m, "lora_dim", 0) or 0)
            alpha = getattr(m, "alpha", dim)
            alpha = float(alpha.item()) if isinstance(alpha, torch.Tensor) and alpha.numel() == 1 else float(dim) if isinstance(alpha, torch.Tensor) else float(alpha or dim)
            facts.append(ModuleFacts(self.block_of(m), m.lora_name in self._unet_blocks, _kind(m), int(dim), alpha, sum(p.numel() for p in m.parameters())))
        return facts

    def _zero_dim_blocks(self) -> List[int]:
        return list(self._zero_dims)

    def algo_counts(self) -> Dict[str, int]:
        counts: Dict[str, int] = {}
        for module in self.all_loras:
            counts[type(module).__name__] = counts.get(type(module).__name__, 0) + 1
        return counts


def _kind(module) -> str:
    layer = module.org_module[0] if hasattr(module, "org_module") else None
    if isinstance(layer, torch.nn.Conv2d):
        return "conv1x1" if tuple(layer.kernel_size) == (1, 1) else "conv"
    return "linear"
