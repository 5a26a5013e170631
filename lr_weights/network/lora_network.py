"""The network: adapters for a text encoder (or two) and a U-Net, and the methods hosts call.

`LoRANetwork` carries the whole method surface sd-scripts trainers and image scripts use
(CONTRACT §1); which modules to build is decided beforehand (plans.py) from the settings or from
a file, so the class itself holds no parsing.
"""

from __future__ import annotations

import logging
import sys
from dataclasses import replace
from typing import Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import torch
from torch import nn

from lr_weights import __version__
from lr_weights.archs.blocks import Architecture
from lr_weights.errors import NetworkArgError
from lr_weights.adapters.functional import delta_weight, max_norm_ratio
from lr_weights.network.host import caller_reads_descriptions
from lr_weights.files.io import load_lora_file, save_lora_file
from lr_weights.files.loading import check_file_fits, log_load_info, rename_foreign_keys
from lr_weights.adapters.lora import LoRAModule
from lr_weights.network.param_groups import ParamGroup, Scope, encoder_lr, first_lr, merge_param_groups, per_encoder_lrs, scoped_groups, unet_parts
from lr_weights.args.settings import TrainingOptions
from lr_weights.network.plans import ModulePlan
from lr_weights.network.table import BlockRow, ModuleFacts, block_table_json, build_block_table

logger = logging.getLogger(__name__)


class LoRANetwork(nn.Module):
    """LoRA/LoCon adapters over a Stable Diffusion model, with per-block learning rates."""

    def __init__(
        self,
        arch: Architecture,
        plans: Sequence[ModulePlan],
        options: TrainingOptions,
        multiplier: float = 1.0,
        settings=None,  # the parsed settings, if made from them (NetworkSettings; the DiT kind's DiTSettings)
        module_factory: Callable[..., LoRAModule] = LoRAModule,
    ):
        super().__init__()
        self.arch = arch
        self.options = options
        self.settings = settings
        self.multiplier = multiplier
        self.text_encoder_loras: List[LoRAModule] = []
        self.unet_loras: List[LoRAModule] = []
        self._unet_blocks: Dict[str, int] = {}
        self._optimizer_checked = False  # prepare_network warns once per network
        extra = {}
        if options.fa:
            if module_factory is not LoRAModule:
                raise NetworkArgError("fa", "1", "fa=0 here: LoRA-FA freezes lora_down, which this network type trains row by row")
            extra["fa"] = True
        for plan in plans:
            # module_factory: LoRAModule, or a subclass with the same constructor (DyLoRA).
            module = module_factory(
                plan.target.lora_name,
                plan.target.layer,
                plan.dim,
                plan.alpha,
                multiplier=multiplier,
                dropout=options.dropout,
                rank_dropout=options.rank_dropout,
                module_dropout=options.module_dropout,
                **extra,
            )
            if module.lora_name in self._modules:
                raise ValueError(f"duplicated LoRA name {module.lora_name}")
            self.add_module(module.lora_name, module)
            if plan.target.is_unet:
                self.unet_loras.append(module)
                self._unet_blocks[module.lora_name] = plan.target.block
            else:
                self.text_encoder_loras.append(module)

    # ---- what the host calls, in its order -------------------------------------------------

    def apply_to(self, text_encoder=None, unet=None, apply_text_encoder: bool = True, apply_unet: bool = True) -> None:
        """Patch the base layers' forwards; adapters of a part that is not trained are dropped."""
        if not apply_text_encoder:
            self._drop(self.text_encoder_loras)
            self.text_encoder_loras = []
        if not apply_unet:
            self._drop(self.unet_loras)
            self.unet_loras = []
        logger.info("enable LoRA for text encoder: %d modules, U-Net: %d modules", len(self.text_encoder_loras), len(self.unet_loras))
        for module in self.all_loras:
            module.apply_to()

    def _drop(self, modules: Sequence[LoRAModule]) -> None:
        for module in modules:
            delattr(self, module.lora_name)
            self._unet_blocks.pop(module.lora_name, None)

    def restore(self) -> None:
        """Undo apply_to on every base layer."""
        for module in self.all_loras:
            module.restore()

    def load_weights(self, file: str):
        """Load a LoRA file into the adapters (non-strict, as upstream); returns the load info.

        Shapes are checked first, so a file for another model or dim fails with the names and
        shapes that disagree; alphas from the file set the scale (CONTRACT §7.8).
        """
        weights = load_lora_file(file)
        rename_foreign_keys(weights, self.arch)
        check_file_fits(
            file,
            weights,
            self.state_dict(),
            stranger="a LoRA for another architecture?",
            remedy="Use --dim_from_weights to take dims from the file, or the network_dim/block_dims it was trained with.",
        )
        info = self._load_with_alphas(weights)
        log_load_info(logger, file, info)
        return info

    def _load_with_alphas(self, weights: Mapping[str, torch.Tensor]):
        """load_state_dict (non-strict); the alphas it loaded set each module's scale."""
        info = self.load_state_dict(weights, strict=False)
        for module in self.all_loras:
            module.set_alpha(float(module.alpha))
        return info

    def enable_gradient_checkpointing(self) -> None:
        """Nothing to do: the adapters' activations are rank-r and cheap to keep."""

    def prepare_optimizer_params(
        self, text_encoder_lr=None, unet_lr=None, default_lr=None, *, with_descriptions: Optional[bool] = None, text_encoder_lrs=None
    ):
        """Param groups for the optimizer; `(groups, descriptions)` for hosts that read descriptions.

        Never raises TypeError: sd-scripts retries with two arguments on TypeError, which would
        hide the real problem.
        """
        try:
            groups = self.param_groups(first_lr(text_encoder_lr), unet_lr, default_lr, text_encoder_lrs=text_encoder_lrs)
        except TypeError as error:
            raise ValueError(f"cannot build optimizer groups: {error}") from error
        params = [g.as_optimizer_group() for g in groups]
        if with_descriptions is None:
            with_descriptions = caller_reads_descriptions(sys._getframe(1))
        if with_descriptions:
            return params, [g.description for g in groups]
        return params

    def prepare_optimizer_params_with_multiple_te_lrs(self, text_encoder_lr=None, unet_lr=None, default_lr=None, *, with_descriptions: Optional[bool] = None):
        """What the newest sd-scripts hosts call instead of prepare_optimizer_params, with
        `--text_encoder_lr` as given: None, a number, or a list (CONTRACT §1.8).

        Two values give SDXL's encoders their own groups, `textencoder 1` and `textencoder 2`; none or
        one value (or a model with one encoder) give exactly what prepare_optimizer_params gives.
        """
        if with_descriptions is None:
            with_descriptions = caller_reads_descriptions(sys._getframe(1))
        try:
            lrs = per_encoder_lrs(text_encoder_lr, [self.arch.text_encoder_label(m.lora_name) for m in self.text_encoder_loras])
        except TypeError as error:
            raise ValueError(f"cannot read --text_encoder_lr={text_encoder_lr!r}: {error}") from error
        return self.prepare_optimizer_params(text_encoder_lr, unet_lr, default_lr, with_descriptions=with_descriptions, text_encoder_lrs=lrs)

    def param_groups(self, text_encoder_lr=None, unet_lr=None, default_lr=None, text_encoder_lrs=None) -> List[ParamGroup]:
        """The groups in upstream's order: the text encoders' (one `textencoder` group, or with
        `text_encoder_lrs` (see per_encoder_lrs) one `textencoder {i}` per encoder), then the U-Net's."""
        self.requires_grad_(True)
        weight = self.options.text_encoder_lr_weight  # LBW's BASE
        if not text_encoder_lrs:
            te_scopes = [("textencoder", [("textencoder", self.text_encoder_loras, encoder_lr(text_encoder_lr, default_lr, weight))])]
        else:
            prefixes = self.arch.encoder_prefixes(len(text_encoder_lrs))
            te_scopes = [
                (f"textencoder {number}", [(f"textencoder {number}", [m for m in self.text_encoder_loras if m.lora_name.startswith(prefix + "_")], encoder_lr(lr, default_lr, weight))])
                for number, (prefix, lr) in enumerate(zip(prefixes, text_encoder_lrs), start=1)
            ]
        return self._groups(te_scopes, unet_lr, default_lr, lambda block: f"unet_block{block}")

    def _groups(self, te_scopes: List[Scope], unet_lr, default_lr, describe, reg_lrs=(), unet_lr_required: bool = True) -> List[ParamGroup]:
        """Text-encoder scopes (each with the text-encoder LoRA+ ratio) and the U-Net's parts -> groups."""
        options = self.options
        scopes = [(stem, parts, options.loraplus_text_encoder_ratio) for stem, parts in te_scopes]
        if self.unet_loras:
            base_lr = unet_lr if unet_lr is not None else default_lr
            if base_lr is None and options.block_lr_weights is not None and unet_lr_required:
                raise NetworkArgError("unet_lr", None, "a U-Net learning rate (--unet_lr or --learning_rate) for block LR weights to scale")
            parts = unet_parts(self.unet_loras, [self.block_of(m) for m in self.unet_loras], options.block_lr_weights, base_lr, describe)
            scopes.append(("unet", parts, options.loraplus_unet_ratio))
        groups = scoped_groups(scopes, reg_lrs)
        return merge_param_groups(groups) if options.merge_lr_groups else groups

    def prepare_network(self, args) -> None:
        """sd-scripts calls this with its parsed arguments before it builds the optimizer: say once,
        before any GPU time is spent, when that optimizer cannot honour this network's per-group LRs."""
        if self._optimizer_checked:
            return
        self._optimizer_checked = True
        from lr_weights.network.optimizer_check import optimizer_warnings

        for message in optimizer_warnings(args, self.group_lr_features(args)):
            logger.warning(message)

    def group_lr_features(self, args=None) -> List[str]:
        """What in this network needs optimizer groups with different LRs (for optimizer_check)."""
        features = []
        weights = self.options.block_lr_weights
        if weights is not None and {weights[self.block_of(m)] for m in self.unet_loras if self.block_of(m) >= 0} - {0.0, 1.0}:
            features.append("block LR weights")
        if self.options.loraplus_unet_ratio not in (None, 1.0) or (self.text_encoder_loras and self.options.loraplus_text_encoder_ratio not in (None, 1.0)):
            features.append("LoRA+ ratio")
        if self.text_encoder_loras and self.unet_loras:
            unet_lr = getattr(args, "unet_lr", None) or getattr(args, "learning_rate", None)
            te_lrs = getattr(args, "text_encoder_lr", None)
            te_lrs = list(te_lrs) if isinstance(te_lrs, (list, tuple)) else [te_lrs]
            te_lrs = [unet_lr if lr is None else lr for lr in te_lrs]
            if any(lr not in (0, unet_lr) for lr in te_lrs) or self.options.text_encoder_lr_weight not in (0.0, 1.0):
                features.append("text encoder LR different from the U-Net's")
        return features

    def prepare_grad_etc(self, text_encoder=None, unet=None) -> None:
        self.requires_grad_(True)

    def on_epoch_start(self, text_encoder=None, unet=None) -> None:
        self.train()

    def get_trainable_params(self):
        return [p for p in self.parameters() if p.requires_grad]

    def requires_grad_(self, requires_grad: bool = True) -> "LoRANetwork":
        """As nn.Module's, except that LoRA-FA's lora_down stays frozen (hosts call this with True)."""
        super().requires_grad_(requires_grad)
        for module in self.all_loras:
            module.requires_grad_(requires_grad)
        return self

    def set_multiplier(self, multiplier: float) -> None:
        self.multiplier = multiplier
        for module in self.all_loras:
            module.multiplier = multiplier

    def set_enabled(self, is_enabled: bool) -> None:
        for module in self.all_loras:
            module.enabled = is_enabled

    def save_weights(self, file: str, dtype: Optional[torch.dtype] = None, metadata: Optional[Mapping[str, str]] = None) -> None:
        """Save `<name>.lora_down.weight`, `.lora_up.weight` and `.alpha` only, atomically."""
        tensors = {}
        for key, value in self.state_dict().items():
            value = value.detach().clone().to("cpu")
            tensors[key] = value if dtype is None else value.to(dtype)
        metadata = dict(metadata or {})
        metadata.setdefault("lr_weights_version", __version__)
        metadata.setdefault("lr_weights_blocks", block_table_json(self.block_table()))
        save_lora_file(file, tensors, metadata)

    def apply_max_norm_regularization(self, max_norm_value: float, device) -> Tuple[int, float, float]:
        """Scale down (up, down) pairs whose ΔW norm exceeds max_norm: (keys scaled, mean norm, max norm).

        A module with several parts (FLUX's split_qkv) is one ΔW, its parts' rows; each part is scaled alike.
        """
        keys_scaled = 0
        norms = []
        with torch.no_grad():
            for module in self.all_loras:
                pairs = module.factor_pairs()
                delta = torch.cat([delta_weight(down.to(device), up.to(device), module.scale) for down, up in pairs], dim=0)
                norm = delta.norm()
                ratio = max_norm_ratio(norm, max_norm_value).cpu()
                if ratio != 1:
                    keys_scaled += 1
                    root = ratio.sqrt().item()
                    for down, up in pairs:
                        if module.fa:  # lora_down is frozen: all of the scaling goes to lora_up
                            up.mul_(ratio.item())
                        else:
                            up.mul_(root)
                            down.mul_(root)
                norms.append((norm * ratio.to(norm.device)).item())
        if not norms:
            return 0, 0.0, 0.0
        return keys_scaled, sum(norms) / len(norms), max(norms)

    # ---- merging, for --base_weights and image scripts ---------------------------------------

    def is_mergeable(self) -> bool:
        return True

    def merge_to(self, text_encoder, unet, weights_sd: Mapping[str, torch.Tensor], dtype=None, device=None) -> None:
        """Add multiplier x ΔW from `weights_sd` into the base layers' weights (no forward patching)."""
        for module in self.all_loras:
            prefix = module.lora_name + "."
            down = weights_sd.get(prefix + "lora_down.weight")
            up = weights_sd.get(prefix + "lora_up.weight")
            if down is None or up is None:
                continue
            layer = module.base_layer
            weight = layer.weight
            target_device = weight.device if device is None else device
            delta = delta_weight(down.to(target_device), up.to(target_device), module.multiplier * module.scale)
            merged = weight.detach().to(target_device, torch.float32) + delta.reshape(weight.shape)
            with torch.no_grad():
                layer.weight.data = merged.to(dtype or weight.dtype).to(weight.device)
        logger.info("merged %d LoRA modules into the base weights", len(self.all_loras))

    # ---- introspection ---------------------------------------------------------------------

    @property
    def all_loras(self) -> List[LoRAModule]:
        return self.text_encoder_loras + self.unet_loras

    @property
    def block_lr_weight(self) -> Optional[List[float]]:
        weights = self.options.block_lr_weights
        return None if weights is None else list(weights)

    def get_lr_weight(self, block: int) -> float:
        weights = self.options.block_lr_weights
        if weights is None or not 0 <= block < len(weights):
            return 1.0
        return weights[block]

    def set_loraplus_lr_ratio(self, loraplus_lr_ratio=None, loraplus_unet_lr_ratio=None, loraplus_text_encoder_lr_ratio=None) -> None:
        self.options = replace(
            self.options,
            loraplus_unet_ratio=loraplus_unet_lr_ratio or loraplus_lr_ratio,
            loraplus_text_encoder_ratio=loraplus_text_encoder_lr_ratio or loraplus_lr_ratio,
        )

    def block_of(self, module: LoRAModule) -> int:
        return self._unet_blocks.get(module.lora_name, -1)

    def module_facts(self) -> List[ModuleFacts]:
        return [
            ModuleFacts(
                self.block_of(m), m.lora_name in self._unet_blocks, m.kind, m.lora_dim, float(m.alpha), sum(p.numel() for p in m.parameters()),
                self.arch.text_encoder_label(m.lora_name),
            )
            for m in self.all_loras
        ]

    def block_table(self) -> List[BlockRow]:
        return build_block_table(
            self.arch, self.module_facts(), self.options.block_lr_weights, self._zero_dim_blocks(), dict(self.options.text_encoder_lr_weights)
        )

    def _zero_dim_blocks(self) -> List[int]:
        """Blocks that keep an LR weight > 0 but were given dim 0 (block_dims / conv_block_dims)."""
        settings = self.settings
        if settings is None or not settings.block_mode:
            return []
        weights = self.options.block_lr_weights
        return [
            i
            for i in range(self.arch.num_blocks)
            if i not in self.arch.moduleless
            and (weights is None or weights[i] > 0)
            and settings.block_dims[i] == 0
            and (settings.conv_block_dims is None or settings.conv_block_dims[i] == 0)
        ]
