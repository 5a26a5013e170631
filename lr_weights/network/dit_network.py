"""The DiT-kind network: LoRANetwork's host surface plus what upstream lora_flux's network adds.

- Optimizer groups (`prepare_optimizer_params_with_multiple_te_lrs`): `--text_encoder_lr` as a list
  (none: the default LR for every encoder, one value: all, more: one each in the family's order,
  FLUX: CLIP-L then T5), each scaled by its LBW weight (FLUX: CLIP, T5). `network_reg_lrs` regexes
  are matched in order, the first wins, and their LR is absolute: it overrides block weights as it
  overrides unet_lr upstream. Without block weights the groups are upstream's (`textencoder 1`, `textencoder 2`, `unet`, each with
  ` plus` for LoRA+ and `reg_lr_<i>` groups first); with them the flow model gets one group per
  block, `unet D03` / `unet S12 plus`, LR = unet_lr x block weight (x the LoRA+ ratio).
- split_qkv modules are saved merged, as upstream: `lora_down` = the parts' downs stacked, `lora_up`
  = their ups block-diagonal. Upstream keeps each part's alpha in the merged file, so a loader,
  which divides by the merged rank (parts x dim), applies 1/parts of the trained change; we save
  alpha x parts, which a loader turns back into each part's alpha / dim. Files without our marker
  are read with upstream's convention.
- lora_flux's norm hooks (update_norms, update_grad_norms, grad_norms, weight_norms,
  combined_weight_norms; GGPO reads them) only on NormHookedDiTNetwork, for the families whose
  upstream network has them (`arch.dit.norm_hooks`: FLUX, HunyuanImage). train_network.py calls
  them when they exist, every step: on SD3, Lumina or Anima they would cost a full-size product
  per module per step and add log entries that upstream's networks do not have.
"""

from __future__ import annotations

import logging
import sys
from typing import List, Mapping, Optional, Sequence, Tuple

import torch

from lr_weights.archs.base import Architecture
from lr_weights.adapters.split import SplitLoRAModule
from lr_weights.network.host import caller_reads_descriptions
from lr_weights.files.io import is_safetensors_path, load_lora_file, read_metadata
from lr_weights.network.dit_plan import regex_matches
from lr_weights.network.lora_network import LoRANetwork
from lr_weights.network.plans import ModulePlan
from lr_weights.network.param_groups import ParamGroup, check_learning_rates, encoder_lr
from lr_weights.args.settings import TrainingOptions

logger = logging.getLogger(__name__)

SPLIT_ALPHA_MARKER = "lr_weights_split_qkv_alpha"  # metadata: merged split_qkv alphas are alpha x parts


def text_encoder_lrs(value, default_lr, count: int) -> List[Optional[float]]:
    """`--text_encoder_lr` (None, a number or a list) -> one LR per encoder (FLUX: [CLIP-L, T5]), as
    upstream: none or one value for every encoder, else one each (the last repeated if short)."""
    if value is None or (isinstance(value, (list, tuple)) and len(value) == 0):
        return [default_lr] * count
    if isinstance(value, (int, float)):
        return [float(value)] * count
    values = list(value)[:count]
    return values + values[-1:] * (count - len(values))


class DiTLoRANetwork(LoRANetwork):
    """LoRA adapters over a DiT-kind model (FLUX.1 / Chroma ...) and its text encoders, with
    per-block learning rates."""

    def __init__(
        self,
        arch: Architecture,
        plans: Sequence[ModulePlan],
        options: TrainingOptions,
        multiplier: float = 1.0,
        settings=None,
        reg_lrs: Sequence[Tuple[str, float]] = (),
        ggpo: Tuple[Optional[float], Optional[float]] = (None, None),
    ):
        splits = {plan.target.lora_name: plan.split_dims for plan in plans}
        beta, sigma = ggpo

        def factory(lora_name, layer, dim, alpha, **kwargs):
            return SplitLoRAModule(lora_name, layer, dim, alpha, split_dims=splits.get(lora_name), ggpo_beta=beta, ggpo_sigma=sigma, **kwargs)

        super().__init__(arch, plans, options, multiplier=multiplier, settings=settings, module_factory=factory)
        self.reg_lrs = tuple(reg_lrs)
        self.split_qkv = any(split is not None for split in splits.values())
        # Hosts read the encoders' flags (flux_train_network.py: network.train_t5xxl, whether T5
        # must be run, not cached): true when that encoder has modules.
        for encoder in arch.dit.text_encoders:
            if encoder.trained_by is not None:
                setattr(self, encoder.trained_by, any(m.lora_name.startswith(encoder.prefix + "_") for m in self.text_encoder_loras))
        self.train_blocks = arch.dit.train_blocks_values[0] if settings is None else settings.train_blocks
        # lora_anima's block flag (train_llm_adapter) as its network has it: the setting, or from weights
        # whether any module of those classes exists.
        for key, _ in arch.dit.flag_block_classes:
            setattr(self, key, settings.flag_values[key] if settings is not None else None)
        # The dotted module path of each module, for families whose regexes read it (Anima).
        self._module_paths = {plan.target.lora_name: plan.target.path for plan in plans}

        # upstream's attributes for the LoRA+ ratios, as given (set_loraplus_lr_ratio keeps them)
        self.loraplus_lr_ratio: Optional[float] = None
        self.loraplus_unet_lr_ratio: Optional[float] = None
        self.loraplus_text_encoder_lr_ratio: Optional[float] = None

    def set_loraplus_lr_ratio(self, loraplus_lr_ratio=None, loraplus_unet_lr_ratio=None, loraplus_text_encoder_lr_ratio=None) -> None:
        self.loraplus_lr_ratio = loraplus_lr_ratio
        self.loraplus_unet_lr_ratio = loraplus_unet_lr_ratio
        self.loraplus_text_encoder_lr_ratio = loraplus_text_encoder_lr_ratio
        super().set_loraplus_lr_ratio(loraplus_lr_ratio, loraplus_unet_lr_ratio, loraplus_text_encoder_lr_ratio)

    # ---- optimizer groups --------------------------------------------------------------------

    def prepare_optimizer_params_with_multiple_te_lrs(self, text_encoder_lr=None, unet_lr=None, default_lr=None, *, with_descriptions: Optional[bool] = None):
        """What flux_train_network.py calls: `(groups, descriptions)`, `--text_encoder_lr` as a list."""
        try:
            groups = self.dit_param_groups(text_encoder_lrs(text_encoder_lr, default_lr, len(self.arch.dit.text_encoders)), unet_lr, default_lr)
        except TypeError as error:
            raise ValueError(f"cannot build optimizer groups: {error}") from error
        params = [g.as_optimizer_group() for g in groups]
        if with_descriptions is None:
            with_descriptions = caller_reads_descriptions(sys._getframe(1))
        return (params, [g.description for g in groups]) if with_descriptions else params

    def param_groups(self, text_encoder_lr=None, unet_lr=None, default_lr=None, text_encoder_lrs=None) -> List[ParamGroup]:
        count = len(self.arch.dit.text_encoders)
        lrs = list(text_encoder_lrs) if text_encoder_lrs else [text_encoder_lr if text_encoder_lr is not None else default_lr] * count
        return self.dit_param_groups(lrs + lrs[-1:] * (count - len(lrs)), unet_lr, default_lr)

    def dit_param_groups(self, te_lrs: Sequence[Optional[float]], unet_lr, default_lr) -> List[ParamGroup]:
        """One `textencoder {i}` scope per encoder with modules, each at its LR x its LBW weight;
        the flow model's parts named by block (`unet D03`); `network_reg_lrs` in every scope."""
        check_learning_rates(None, unet_lr, default_lr, te_lrs)
        self.requires_grad_(True)
        options = self.options
        weights = dict(options.text_encoder_lr_weights)
        te_scopes = []
        for number, encoder in enumerate(self.arch.dit.text_encoders, start=1):
            modules = [m for m in self.text_encoder_loras if m.lora_name.startswith(encoder.prefix + "_")]
            if not modules:
                continue
            lr = encoder_lr(te_lrs[number - 1], None, weights.get(encoder.label, options.text_encoder_lr_weight))
            logger.info("Text Encoder %d (%s): %d modules, LR %s", number, encoder.title, len(modules), lr)
            stem = encoder.group or f"textencoder {number}"
            te_scopes.append((stem, [(stem, modules, lr)]))
        return self._groups(
            te_scopes, unet_lr, default_lr, self._block_description, self.reg_lrs, unet_lr_required=False,
            reg_match=self._reg_match, reg_order=self.arch.dit.reg_group_order,
        )

    def _block_description(self, block: int) -> str:
        return f"unet {self.arch.block_name(block)}" if block >= 0 else "unet"

    def _reg_match(self, pattern: str, module) -> bool:
        """network_reg_lrs as the family's upstream matches it (archs/dit.py regex_subject)."""
        return regex_matches(self.arch, pattern, module.lora_name, self._module_paths.get(module.lora_name, ""))

    # ---- files: split_qkv modules are stored merged ------------------------------------------

    def _split_modules(self) -> List[SplitLoRAModule]:
        return [m for m in self.all_loras if getattr(m, "split_dims", None) is not None]

    def state_dict(self, *args, destination=None, prefix: str = "", keep_vars: bool = False):
        result = super().state_dict(*args, destination=destination, prefix=prefix, keep_vars=keep_vars)
        merged = {}
        for module in self._split_modules():
            key = f"{prefix}{module.lora_name}."
            parts = len(module.split_dims)
            downs = [result[f"{key}lora_down.{i}.weight"] for i in range(parts)]
            ups = [result[f"{key}lora_up.{i}.weight"] for i in range(parts)]
            rank = downs[0].shape[0]
            up = torch.zeros((sum(module.split_dims), rank * parts), dtype=ups[0].dtype, device=ups[0].device)
            row = 0
            for j, part in enumerate(ups):
                up[row : row + part.shape[0], j * rank : (j + 1) * rank] = part
                row += part.shape[0]
            logger.debug("split_qkv: %s saved merged (lora_down %s, lora_up %s, alpha x %d)", module.lora_name, (rank * parts, downs[0].shape[1]), tuple(up.shape), parts)
            merged[key] = {
                f"{key}lora_down.weight": torch.cat(downs, dim=0),
                f"{key}lora_up.weight": up,
                f"{key}alpha": result[f"{key}alpha"] * parts,
            }
        if not merged:
            return result
        # In place, as upstream: the merged down, up, alpha where the module's keys were.
        ordered = type(result)()
        if hasattr(result, "_metadata"):
            ordered._metadata = result._metadata
        for name, value in result.items():
            owner = prefix + name[len(prefix) :].split(".", 1)[0] + "."  # LoRA names hold no "."
            if owner not in merged:
                ordered[name] = value
            elif merged[owner] is not None:
                ordered.update(merged[owner])
                merged[owner] = None
        return ordered

    def load_state_dict(self, state_dict, strict: bool = True, *args, **kwargs):
        state_dict = dict(state_dict)
        for module in self._split_modules():
            key = f"{module.lora_name}."
            parts = len(module.split_dims)
            down = state_dict.pop(f"{key}lora_down.weight", None)
            up = state_dict.pop(f"{key}lora_up.weight", None)
            if down is not None:
                for i, chunk in enumerate(torch.chunk(down, parts, dim=0)):
                    state_dict[f"{key}lora_down.{i}.weight"] = chunk
            if up is not None:
                rank = up.shape[1] // parts
                row = 0
                for j, size in enumerate(module.split_dims):
                    state_dict[f"{key}lora_up.{j}.weight"] = up[row : row + size, j * rank : (j + 1) * rank]
                    row += size
            if f"{key}alpha" in state_dict:
                state_dict[f"{key}alpha"] = state_dict[f"{key}alpha"] / parts
        return super().load_state_dict(state_dict, strict, *args, **kwargs)

    def load_weights(self, file: str):
        if self.split_qkv and is_safetensors_path(file) and SPLIT_ALPHA_MARKER not in read_metadata(file):
            # An upstream file: its merged alphas are each part's alpha; make them ours first.
            weights = load_lora_file(file)
            for module in self._split_modules():
                key = f"{module.lora_name}.alpha"
                if key in weights:
                    weights[key] = weights[key] * len(module.split_dims)
            return self._load_with_alphas(weights)
        return super().load_weights(file)

    def save_weights(self, file: str, dtype: Optional[torch.dtype] = None, metadata: Optional[Mapping[str, str]] = None) -> None:
        metadata = dict(metadata or {})
        if self.split_qkv:
            metadata.setdefault(SPLIT_ALPHA_MARKER, "alpha x parts")
        super().save_weights(file, dtype, metadata)

    # ---- the per-block table ----------------------------------------------------------------

    def _zero_dim_blocks(self) -> List[int]:
        """Blocks with an LR weight > 0 that got no module (train_blocks, train_*_block_indices, dim 0)."""
        weights = self.options.block_lr_weights
        if weights is None:
            return []
        present = set(self._unet_blocks.values())
        return [i for stack in self.arch.stacks for i in range(stack.start, stack.stop) if weights[i] > 0 and i not in present]


class NormHookedDiTNetwork(DiTLoRANetwork):
    """DiTLoRANetwork with lora_flux's norm hooks, which train_network.py calls every step and logs,
    and GGPO reads: for the families whose upstream network has them (FLUX, HunyuanImage)."""

    def update_norms(self) -> None:
        for module in self.all_loras:
            module.update_norms()

    def update_grad_norms(self) -> None:
        for module in self.all_loras:
            module.update_grad_norms()

    def _stacked(self, attribute: str) -> Optional[torch.Tensor]:
        values = [getattr(m, attribute).mean(dim=0) for m in self.all_loras if getattr(m, attribute, None) is not None]
        return torch.stack(values) if values else None

    def grad_norms(self) -> Optional[torch.Tensor]:
        return self._stacked("grad_norms")

    def weight_norms(self) -> Optional[torch.Tensor]:
        return self._stacked("weight_norms")

    def combined_weight_norms(self) -> Optional[torch.Tensor]:
        return self._stacked("combined_weight_norms")


def network_class(arch: Architecture) -> type:
    """The network class of a DiT family: with the norm hooks where upstream's network has them."""
    return NormHookedDiTNetwork if arch.dit.norm_hooks else DiTLoRANetwork
