"""What the user asked for: network_args strings -> one frozen, validated settings object (SD/SDXL).

Every entry point (LoRA, DyLoRA, LyCORIS, the CLI) reaches its verdicts through this one path, so
they accept and refuse exactly the same inputs: keys.py checks the names, then the values are
parsed here with the scalar parsers (scalars.py), the block-weight specs (weights.py) and LBW
vectors (lbw.py), none of which imports anything above it. dit_settings.py is the DiT kind's counterpart (FLUX and the families after it).
Hosts pass every value as a string (except `dropout`, which newer hosts inject as a float or
None); direct callers may pass numbers.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from typing import Any, Dict, Mapping, Optional, Tuple

from lr_weights.archs.base import Architecture
from lr_weights.args.keys import BLOCK_LIST_KEYS, normalise_kwargs, typed_name
from lr_weights.args.lbw import lbw_lengths, named_form, parse_lbw
from lr_weights.args.scalars import parse_alpha, parse_flag, parse_float, parse_int, parse_probability, parse_ratio
from lr_weights.args.weights import resolve_stack_lr_weights
from lr_weights.errors import NetworkArgError, TrainsNothingError

logger = logging.getLogger(__name__)

DEFAULT_DIM = 4
DEFAULT_ALPHA = 1.0


@dataclass(frozen=True)
class DimAlpha:
    dim: int
    alpha: float


@dataclass(frozen=True)
class TrainingOptions:
    """Settings that both the create and the from-weights path honour (CONTRACT §7.9)."""

    dropout: Optional[float] = None
    rank_dropout: Optional[float] = None
    module_dropout: Optional[float] = None
    loraplus_unet_ratio: Optional[float] = None
    loraplus_text_encoder_ratio: Optional[float] = None
    block_lr_weights: Optional[Tuple[float, ...]] = None
    # LBW's BASE (lbw_weights=): multiplies the text-encoder LR; 0 means no text-encoder modules.
    text_encoder_lr_weight: float = 1.0
    # Per text encoder where the LBW vocabulary names them apart (FLUX: ("TE1", CLIP), ("TE3", T5)).
    text_encoder_lr_weights: Tuple[Tuple[str, float], ...] = ()
    fa: bool = False  # LoRA-FA: lora_down frozen at init, only lora_up trains
    merge_lr_groups: bool = False  # one optimizer group per distinct LR instead of per block


@dataclass(frozen=True)
class NetworkSettings:
    """Resolved settings of a LoRA/LoCon network for one architecture."""

    arch: Architecture
    dim: int
    alpha: float
    conv_dim: Optional[int]
    conv_alpha: Optional[float]
    # Per-block tables (len = arch.num_blocks) when block mode is on, else None. Blocks whose LR
    # weight is 0 already have dim 0 here.
    block_dims: Optional[Tuple[int, ...]]
    block_alphas: Optional[Tuple[float, ...]]
    conv_block_dims: Optional[Tuple[int, ...]]
    conv_block_alphas: Optional[Tuple[float, ...]]
    options: TrainingOptions

    @property
    def block_mode(self) -> bool:
        return self.block_dims is not None

    @property
    def trains_conv(self) -> bool:
        """Whether k x k convs (ResnetBlock2D / Downsample2D / Upsample2D) are targeted at all."""
        return self.conv_dim is not None or self.conv_block_dims is not None

    def text_encoder_dim_alpha(self) -> DimAlpha:
        return DimAlpha(self.dim, self.alpha)

    def unet_dim_alpha(self, block: int, is_conv_kxk: bool) -> Optional[DimAlpha]:
        """dim/alpha for a U-Net layer in `block` (-1 = unknown block), or None when it gets no module."""
        if not self.block_mode or block < 0:
            if is_conv_kxk:
                return None if self.conv_dim is None else DimAlpha(self.conv_dim, self.conv_alpha)
            return DimAlpha(self.dim, self.alpha)
        if is_conv_kxk:
            if self.conv_block_dims is None:
                return None
            return DimAlpha(self.conv_block_dims[block], self.conv_block_alphas[block])
        return DimAlpha(self.block_dims[block], self.block_alphas[block])


def parse_block_list(key: str, value: Any, arch: Architecture, item) -> Tuple:
    entries = [e.strip() for e in str(value).split(",")]
    if len(entries) != arch.num_blocks:
        raise NetworkArgError(
            key,
            value,
            f"exactly {arch.num_blocks} comma-separated values for {arch.name.upper()} "
            f"(one per block {arch.block_names[0]}..{arch.block_names[-1]}), got {len(entries)}",
        )
    values = []
    for position, entry in enumerate(entries):
        try:
            values.append(item(key, entry))
        except NetworkArgError as error:
            raise NetworkArgError(
                key, value, f"{arch.num_blocks} comma-separated values, each {error.expected} (entry {position} for {arch.block_name(position)} is {entry!r})"
            ) from None
    return tuple(values)


def parse_unit(kwargs: Mapping[str, Any]) -> int:
    """DyLoRA's `unit`: how many rank rows train together each step (default 1, as upstream)."""
    value = kwargs.get("unit")
    if value is None:
        return 1
    return parse_int("unit", value, minimum=1)


def check_dylora_dims(settings: "NetworkSettings", unit: int) -> None:
    """Every dim a DyLoRA network will use must be a multiple of `unit` (upstream asserts it)."""
    expected = f"dims that are multiples of unit={unit}"
    if settings.dim % unit:
        raise NetworkArgError("network_dim", settings.dim, f"a multiple of unit={unit} (DyLoRA trains unit rank rows at a time)")
    if settings.conv_dim is not None and settings.conv_dim % unit:
        raise NetworkArgError("conv_dim", settings.conv_dim, f"a multiple of unit={unit} (DyLoRA trains unit rank rows at a time)")
    for key, dims in (("block_dims", settings.block_dims), ("conv_block_dims", settings.conv_block_dims)):
        if dims is None:
            continue
        bad = [f"{settings.arch.block_name(i)}={d}" for i, d in enumerate(dims) if d % unit and i not in settings.arch.moduleless]
        if bad:
            raise NetworkArgError(key, ",".join(str(d) for d in dims), f"{expected} (0 prunes a block); not: {', '.join(bad)}")


def _block_int(key: str, text: str) -> int:
    return parse_int(key, text)


def parse_training_options(
    arch: Architecture, kwargs: Mapping[str, Any], neuron_dropout: Any = None
) -> TrainingOptions:
    dropout = parse_probability("neuron_dropout", neuron_dropout)
    injected = parse_probability("dropout", kwargs.get("dropout"))
    if dropout is None:
        dropout = injected
    elif injected is not None and injected != dropout:
        logger.warning("dropout=%s differs from --network_dropout=%s; using --network_dropout.", injected, dropout)

    common = parse_ratio("loraplus_lr_ratio", kwargs.get("loraplus_lr_ratio"))
    unet_ratio = parse_ratio("loraplus_unet_lr_ratio", kwargs.get("loraplus_unet_lr_ratio"))
    te_ratio = parse_ratio("loraplus_text_encoder_lr_ratio", kwargs.get("loraplus_text_encoder_lr_ratio"))
    parsed = lbw_training_weights_full(arch, kwargs)
    lbw = None if parsed is None else (parsed.base, parsed.blocks)
    per_encoder = () if parsed is None or arch.lbw.text_encoder_labels == ("TE",) else parsed.text_encoders
    return TrainingOptions(
        dropout=dropout,
        rank_dropout=parse_probability("rank_dropout", kwargs.get("rank_dropout")),
        module_dropout=parse_probability("module_dropout", kwargs.get("module_dropout")),
        loraplus_unet_ratio=unet_ratio or common,
        loraplus_text_encoder_ratio=te_ratio or common,
        block_lr_weights=trainable_block_lr_weights(arch, kwargs) if lbw is None else lbw[1],
        text_encoder_lr_weight=1.0 if lbw is None else lbw[0],
        text_encoder_lr_weights=per_encoder,
        fa=parse_flag("fa", kwargs.get("fa")),
        merge_lr_groups=parse_flag("merge_lr_groups", kwargs.get("merge_lr_groups")),
    )


def lbw_training_weights(arch: Architecture, kwargs: Mapping[str, Any]) -> Optional[Tuple[float, Tuple[float, ...]]]:
    """`lbw_weights=` (an LBW vector or preset) -> (BASE, per-block weights), or None when not given.

    The blocks are expanded as LBW expands them at inference (lr_weights.args.lbw.parse_lbw): a block the
    vector does not name gets 0, so what was tested in the WebUI is what trains. The zero threshold
    applies as for the per-stack lists. FLUX's per-encoder weights: lbw_training_weights_full.
    """
    parsed = lbw_training_weights_full(arch, kwargs)
    return None if parsed is None else (parsed.base, parsed.blocks)


def block_weights_of(arch: Architecture, kwargs: Mapping[str, Any], *, require_training: bool = True) -> Tuple[Optional[Dict[str, float]], Optional[Tuple[float, ...]]]:
    """(text-encoder weights by LBW label, or None without lbw_weights; per-block LR weights, or None
    without block args) exactly as training uses them. With require_training=False, settings that
    train nothing are returned instead of refused (TrainsNothingError), so they can be shown."""
    parsed = lbw_training_weights_full(arch, kwargs, require_training=require_training)
    if parsed is not None:
        return dict(parsed.text_encoders), parsed.blocks
    return None, trainable_block_lr_weights(arch, kwargs, require_training=require_training)


def lbw_training_weights_full(arch: Architecture, kwargs: Mapping[str, Any], *, require_training: bool = True):
    """As lbw_training_weights, but the whole LBWWeights (text-encoder weights by label), thresholded."""
    text = kwargs.get("lbw_weights")
    if text is None:
        return None
    mixed = [key for key in arch.lr_weight_keys if kwargs.get(key) is not None]
    if mixed:
        raise NetworkArgError(
            "lbw_weights", text,
            f"to be given without {', '.join(mixed)}: lbw_weights sets every block's weight. Use one form "
            "(lr_weights.args.lbw.lbw_to_network_args converts an LBW vector to per-stack lists)",
        )
    parsed = parse_lbw(arch, text)
    threshold = 0.0 if kwargs.get("block_lr_zero_threshold") is None else parse_float("block_lr_zero_threshold", str(kwargs["block_lr_zero_threshold"]).strip())
    if any(w < 0 for _, w in parsed.text_encoders) or parsed.base < 0 or any(w < 0 for w in parsed.blocks):
        raise NetworkArgError("lbw_weights", text, "weights >= 0 for training (a negative weight would be a negative learning rate)")
    blocks = tuple(weight if weight > threshold else 0.0 for weight in parsed.blocks)
    trained = arch.trained_blocks()
    if require_training and all(blocks[i] == 0 for i in trained):
        raise TrainsNothingError("lbw_weights", text, "at least one U-Net block with a weight above block_lr_zero_threshold; with this vector nothing in the U-Net would train")

    form, _ = named_form(arch, text)
    named = {target for entry in form for target in arch.lbw.targets(entry)}
    unnamed = [arch.block_name(i) for i in trained if blocks[i] == 0 and arch.block_name(i) not in named]
    zero = [arch.block_name(i) for i in trained if blocks[i] == 0 and arch.block_name(i) not in unnamed]
    text_encoders = ", ".join(f"{label} x{weight:g}" for label, weight in parsed.text_encoders)
    logger.info(
        "lbw_weights=%s: %s; blocks with weight 0 get no modules%s%s",
        text, "BASE (text encoders) x%g" % parsed.base if arch.lbw.text_encoder_labels == ("TE",) else f"text encoders {text_encoders}",
        f"; set to 0: {', '.join(zero)}" if zero else "",
        f"; not named by this {len(form)}-value form, so 0 as in LBW: {', '.join(unnamed)} "
        f"(they hold only conv layers; the {lbw_lengths(arch)[-1]}-value form names them)" if unnamed else "",
    )
    return replace(parsed, blocks=blocks)


def trainable_block_lr_weights(arch: Architecture, kwargs: Mapping[str, Any], *, require_training: bool = True) -> Optional[Tuple[float, ...]]:
    """The block LR weights, refusing what upstream would silently train wrong or not at all."""
    if kwargs.get("block_lr_zero_threshold") is not None:
        parse_float("block_lr_zero_threshold", str(kwargs["block_lr_zero_threshold"]).strip())
    weights = resolve_stack_lr_weights(arch, kwargs, kwargs.get("block_lr_zero_threshold"))
    if weights is None:
        return None
    threshold = kwargs.get("block_lr_zero_threshold", "0")
    for index, weight in enumerate(weights):
        if weight < 0:
            key = arch.stack_of(index).lr_weight_key
            raise NetworkArgError(
                key,
                kwargs.get(key),
                f"weights >= 0: {arch.block_name(index)} gets {weight:g}, which block_lr_zero_threshold={threshold} "
                "lets through and which would be a negative learning rate",
            )
    if require_training and all(weights[index] == 0 for index in arch.trained_blocks()):
        given = " ".join(f"{k}={kwargs[k]}" for k in arch.lr_weight_keys if kwargs.get(k) is not None)
        raise TrainsNothingError(
            "block_lr_zero_threshold",
            threshold,
            "a threshold below at least one block weight: with these settings every U-Net block has weight 0, "
            f"so nothing in the U-Net would train ({given}). The threshold is compared with the block weight "
            "alone, not weight x learning rate: a block trains only if its weight > threshold",
        )
    return weights


def _conv_dim_alpha(args: Mapping[str, Any]) -> Tuple[Optional[int], Optional[float]]:
    """LoCon's conv_dim / conv_alpha (alpha 1 by default; a lone conv_alpha is ignored, with a warning)."""
    conv_alpha = None if args.get("conv_alpha") is None else parse_alpha("conv_alpha", args["conv_alpha"])
    if args.get("conv_dim") is not None:
        return parse_int("conv_dim", args["conv_dim"], minimum=1), DEFAULT_ALPHA if conv_alpha is None else conv_alpha
    if conv_alpha is not None:
        logger.warning("conv_alpha=%s is ignored: conv_dim is not given, so k x k convs are not trained.", args["conv_alpha"])
    return None, None


def parse_network_settings(
    arch: Architecture,
    network_dim: Any,
    network_alpha: Any,
    kwargs: Mapping[str, Any],
    neuron_dropout: Any = None,
) -> NetworkSettings:
    """Everything `create_network` needs, validated. Raises NetworkArgError on bad input."""
    args = normalise_kwargs(kwargs)
    dim = DEFAULT_DIM if network_dim is None else parse_int("network_dim", network_dim, minimum=1)
    alpha = DEFAULT_ALPHA if network_alpha is None else parse_alpha("network_alpha", network_alpha)

    conv_dim, conv_alpha = _conv_dim_alpha(args)
    options = parse_training_options(arch, args, neuron_dropout)
    lists = {key: args.get(key) for key in BLOCK_LIST_KEYS}
    if options.block_lr_weights is None and all(v is None for v in lists.values()):
        return NetworkSettings(arch, dim, alpha, conv_dim, conv_alpha, None, None, None, None, options)

    n = arch.num_blocks
    block_dims = list(parse_block_list("block_dims", lists["block_dims"], arch, _block_int) if lists["block_dims"] is not None else [dim] * n)
    block_alphas = (
        parse_block_list("block_alphas", lists["block_alphas"], arch, parse_alpha) if lists["block_alphas"] is not None else (alpha,) * n
    )
    conv_block_dims: Optional[list] = None
    conv_block_alphas: Optional[Tuple[float, ...]] = None
    if lists["conv_block_dims"] is not None:
        conv_block_dims = list(parse_block_list(typed_name("conv_block_dims", kwargs), lists["conv_block_dims"], arch, _block_int))
    elif conv_dim is not None:
        conv_block_dims = [conv_dim] * n
    if lists["conv_block_alphas"] is not None:
        if conv_block_dims is None:
            raise NetworkArgError(
                "conv_block_alphas", lists["conv_block_alphas"], "to be given together with conv_dim or conv_block_dims (it sets the alphas of k x k conv modules, which are only made then)"
            )
        conv_block_alphas = parse_block_list(typed_name("conv_block_alphas", kwargs), lists["conv_block_alphas"], arch, parse_alpha)
    elif conv_block_dims is not None:
        conv_block_alphas = (DEFAULT_ALPHA if conv_alpha is None else conv_alpha,) * n

    if options.block_lr_weights is not None:
        for i, weight in enumerate(options.block_lr_weights):
            if weight == 0:
                block_dims[i] = 0
                if conv_block_dims is not None:
                    conv_block_dims[i] = 0

    return NetworkSettings(
        arch,
        dim,
        alpha,
        conv_dim,
        conv_alpha,
        tuple(block_dims),
        tuple(block_alphas),
        None if conv_block_dims is None else tuple(conv_block_dims),
        conv_block_alphas,
        options,
    )
