"""The DiT kind, as data: a flow model whose blocks are stacks of transformer blocks, adapted the
way sd-scripts' `networks/lora_flux.py` adapts FLUX (and lora_sd3 / lora_lumina / lora_hunyuan_image
their models, after the same pattern).

What such a module decides from names, and what an `Architecture` of this kind therefore states
(see archs/flux.py for the worked example and docs/adding-a-family.md):
- which block classes hold the adapted Linears, per `train_blocks` value;
- the component dims (`img_attn_dim` ...): an arg and the substrings a LoRA name must all contain;
- the in layers (`in_dims`): one dim per substring filter searched over the whole model;
- the block selections (`train_double_block_indices` ...): an arg per stack;
- split_qkv: which fused Linears are split, and into which parts;
- the text encoders: LoRA prefix, label, and the flag (`train_t5xxl`) an encoder needs, if any.

lora_anima follows the same pattern with four differences, stated here as data too: an on/off arg
adds block classes (`train_llm_adapter`), regex args pick layers by their dotted module path
(`exclude_patterns` / `include_patterns` over a default exclude), `network_reg_dims` /
`network_reg_lrs` fullmatch the module path instead of searching the LoRA name, and regex LR
groups come in first-match order instead of sorted.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Mapping, Optional, Tuple


@dataclass(frozen=True)
class TextEncoder:
    """One text encoder of a DiT family, in the order the host passes them."""

    prefix: str  # LoRA-name prefix without the trailing "_": "lora_te1"
    label: str  # in tables and LBW: "TE1"
    title: str  # in messages: "CLIP-L"
    # An upstream on/off arg this encoder needs to get modules ("train_t5xxl"); None: always.
    # Encoders after the first one whose flag is off get none either, as upstream stops there.
    trained_by: Optional[str] = None
    # The description of its optimizer groups; None: "textencoder <its position from 1>".
    group: Optional[str] = None


@dataclass(frozen=True)
class SplitRule:
    """split_qkv for the Linears whose LoRA name contains every one of `contains`.

    `form` says how the fused output is cut, always from the layer's own shape:
    - "equal": `parts` equal parts (a fused q, k, v);
    - "qkv+rest": three parts of in_features each (q, k, v) and the rest (an MLP input);
    - "q+kv": q of in_features, then k and v, equal halves of the rest (grouped-query attention,
      fewer k/v heads than q heads: Lumina 2's attention.qkv).
    """

    contains: Tuple[str, ...]
    form: str
    parts: int = 3


@dataclass(frozen=True)
class PathFilter:
    """Layers picked by regexes on their dotted module path (lora_anima): a layer is left out when an
    exclude pattern (the default one, always, plus the user's) fullmatches its path and no include
    pattern does. Include patterns only bring back what an exclude removed; they never restrict."""

    default_exclude: str
    exclude_key: str = "exclude_patterns"
    include_key: str = "include_patterns"


@dataclass(frozen=True)
class DiTLayout:
    """What a lora_flux-style module reads off a DiT model, as data."""

    # train_blocks value -> the block classes whose Linears are adapted; the first is the default.
    # A layout with a single value has no train_blocks arg (lora_sd3).
    train_blocks: Tuple[Tuple[str, Tuple[str, ...]], ...]
    # train_blocks value -> LoRA-name substrings, one pass over those blocks each, in this order
    # (lora_lumina selects its blocks by name: "refiners" is noise_refiner, then context_refiner);
    # a value not listed is one pass over every block of its classes.
    train_block_filters: Tuple[Tuple[str, Tuple[str, ...]], ...] = ()
    # (arg, substrings a LoRA name must all contain), in upstream's order of precedence.
    component_dims: Tuple[Tuple[str, Tuple[str, ...]], ...] = ()
    # The in layers' arg (FLUX: in_dims), and per entry (its name, the substring filter).
    in_dims_key: Optional[str] = None
    in_layers: Tuple[Tuple[str, str], ...] = ()
    in_block: str = "IN"  # the block the in layers belong to
    # k x k convs among the in layers take conv_dim / conv_alpha when conv_dim is given, else their
    # in dim (lora_sd3: x_embedder's patch conv); component dims never apply to them.
    in_conv: bool = False
    # (arg, stack name): upstream's `train_*_block_indices`, which prune a stack's blocks.
    block_selections: Tuple[Tuple[str, str], ...] = ()
    split_rules: Tuple[SplitRule, ...] = ()
    text_encoders: Tuple[TextEncoder, ...] = ()
    # Args upstream reads that do nothing on this model (warned about, not refused).
    no_effect_keys: Tuple[str, ...] = ()
    no_effect_reason: str = ""
    # The module's other own args: upstream's (split_qkv, network_reg_dims, ggpo_beta, ...).
    upstream_keys: Tuple[str, ...] = ()
    # (on/off arg, block classes it adds): lora_anima's train_llm_adapter.
    flag_block_classes: Tuple[Tuple[str, Tuple[str, ...]], ...] = ()
    path_filter: Optional[PathFilter] = None
    # What network_reg_dims / network_reg_lrs regexes are matched against: "lora_name" (re.search on
    # `lora_unet_double_blocks_3_...`, lora_flux) or "module_path" (re.fullmatch on
    # `blocks.3.mlp.layer1`, lora_anima).
    regex_subject: str = "lora_name"
    # Order of the `reg_lr_<i>` groups: "sorted" (as strings: reg_lr_1, reg_lr_10, ..., lora_flux) or
    # "first_match" (in the order modules first match, lora_anima).
    reg_group_order: str = "sorted"
    # (stack name, on/off arg): a stack whose modules exist only with that arg (an LR-weight list
    # for it without the arg is refused).
    stack_flags: Tuple[Tuple[str, str], ...] = ()
    # Upstream's network has lora_flux's norm hooks (update_grad_norms, grad_norms, ...), which
    # train_network.py calls every step and logs when they exist, and which GGPO needs.
    norm_hooks: bool = False

    @property
    def train_blocks_values(self) -> Tuple[str, ...]:
        return tuple(value for value, _ in self.train_blocks)

    def block_classes(self, train_blocks: str, flags: Optional[Mapping[str, bool]] = None) -> Tuple[str, ...]:
        """The classes adapted for a train_blocks value and the on/off args that add classes."""
        flags = flags or {}
        added = tuple(c for key, classes in self.flag_block_classes if flags.get(key) for c in classes)
        return dict(self.train_blocks)[train_blocks] + added

    def block_filters(self, train_blocks: str) -> Tuple[str, ...]:
        """The name filters of a train_blocks value, one pass each; () for one unfiltered pass."""
        return dict(self.train_block_filters).get(train_blocks, ())

    @property
    def all_block_classes(self) -> Tuple[str, ...]:
        return self.train_blocks[0][1] + tuple(c for _, classes in self.flag_block_classes for c in classes)

    @property
    def flags(self) -> Tuple[str, ...]:
        """The on/off args: those that select text encoders (train_t5xxl) or add blocks (train_llm_adapter)."""
        return tuple(e.trained_by for e in self.text_encoders if e.trained_by is not None) + tuple(key for key, _ in self.flag_block_classes)

    @property
    def in_filters(self) -> Tuple[str, ...]:
        return tuple(name_filter for _, name_filter in self.in_layers)

    @property
    def in_names(self) -> Tuple[str, ...]:
        return tuple(name for name, _ in self.in_layers)

    @property
    def keys(self) -> Tuple[str, ...]:
        """Every arg this layout gives meaning to."""
        # train_blocks only where there is a choice (HunyuanImage's upstream never reads it)
        keys = ("train_blocks",) if len(self.train_blocks) > 1 else ()
        keys += tuple(key for key, _ in self.block_selections) + self.upstream_keys
        if self.path_filter is not None:
            keys += (self.path_filter.exclude_key, self.path_filter.include_key)
        keys += tuple(key for key, _ in self.component_dims) + ((self.in_dims_key,) if self.in_dims_key else ())
        keys += ("conv_dim", "conv_alpha") if self.in_conv else ()
        return keys + self.flags

    def split_rule(self, lora_name: str) -> Optional[SplitRule]:
        for rule in self.split_rules:
            if all(part in lora_name for part in rule.contains):
                return rule
        return None


def numbered_blocks(model: Any, container: str) -> int:
    """How many blocks `model` holds under `container` (`joint_blocks.0`, `joint_blocks.1`, ...):
    the highest N + 1, read off `named_modules()` (so a tree rebuilt from a skeleton counts too);
    0 when there is none."""
    pattern = re.compile(rf"{re.escape(container)}\.(\d+)")
    found = [int(m.group(1)) for name, _ in model.named_modules() for m in [pattern.fullmatch(name)] if m]
    return max(found) + 1 if found else 0
