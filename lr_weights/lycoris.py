"""sd-scripts entry point: `--network_module lr_weights.lycoris --network_args "algo=lokr" ...`.

LyCORIS algorithms (LoKr, LoHa, LoCon, IA3, full, DyLoRA, GLoRA, diag-OFT, BOFT, DoRA via
`dora_wd`) with lr_weights' block-wise learning rates. lycoris-lora chooses the layers and builds
the modules, their math and their file format (lr_weights.adapters.lycoris_library); this file adds the
block args of lr_weights.lora, parsed by the same parser with the same meaning:

* down/mid/up_lr_weight, lbw_weights, block_lr_zero_threshold: one optimizer group per block;
  blocks at or under the threshold get no modules at all;
* block_dims/block_alphas/conv_block_dims/conv_block_alphas replace the dim/alpha per block, for
  the algorithms that have them (ALGO_BLOCK_ARGS says which; the rest is a NetworkArgError).

With no block args the network holds exactly the modules `lycoris.kohya` builds, built in the
same order with the same arguments, so the same seed gives the same tensors, keys and metadata.
Where `lycoris.kohya` breaks, this module does not: a layer that the preset matches twice (preset
`full` on SD1/SD2: `time_embedding.linear_1/2`) gets one module; presets never leak from one
network into the next; an unknown `algo` or preset is an error listing the valid ones.
"""

from __future__ import annotations

import difflib
import logging
from typing import Any, Dict, List, Mapping, Optional, Tuple

from lr_weights.network.assembly import log_created, options_from_weights
from lr_weights.archs.blocks import block_index, detect_architecture
from lr_weights.errors import NetworkArgError
from lr_weights.files.io import load_lora_file
from lr_weights.log import ensure_visible
from lr_weights.lora import get_block_lr_weight
from lr_weights.adapters.lycoris_library import check_algo, check_preset, import_lycoris, lycoris_arg_names, lycoris_logs_forwarded, module_from_state_dict, module_names, record_modules
from lr_weights.network.lycoris_network import LycorisBlockNetwork
from lr_weights.network.plans import ModulePlan
from lr_weights.args.settings import BLOCK_LIST_KEYS, KNOWN_KEYS, near_miss, normalise_kwargs, parse_int, parse_network_settings, parse_probability
from lr_weights.network.targets import Target, as_text_encoder_list

logger = logging.getLogger(__name__)

__all__ = ["LycorisBlockNetwork", "create_network", "create_network_from_weights", "get_block_lr_weight", "ALGO_BLOCK_ARGS"]

# Which per-block shape args each algorithm can honour. Learning-rate weights, lbw_weights and the
# zero threshold (pruning) work for every algorithm: they decide groups and whether a module exists.
_RANK = ("block_dims", "block_alphas", "conv_block_dims", "conv_block_alphas")
ALGO_BLOCK_ARGS: Dict[str, Tuple[str, ...]] = {
    "lora": _RANK,
    "locon": _RANK,
    "loha": _RANK,
    "lokr": _RANK,
    "dylora": _RANK,
    "glora": _RANK,
    "tlora": _RANK,
    # OFT: the "dim" is the size of the orthogonal blocks, and there is no alpha scale.
    "diag-oft": ("block_dims", "conv_block_dims"),
    "boft": ("block_dims", "conv_block_dims"),
    # No rank and no alpha: a vector (ia3) or the whole weight difference (full).
    "ia3": (),
    "full": (),
}
_WHY_NOT = {
    "ia3": "IA3 learns one scaling vector per layer and has no dim or alpha",
    "full": "full trains the whole weight difference and has no dim or alpha",
    "diag-oft": "diag-OFT's dim is its block size and it has no alpha",
    "boft": "BOFT's dim is its block size and it has no alpha",
}
# lr_weights' own args that make no sense for LyCORIS modules.
_NOT_FOR_LYCORIS = {
    "fa": "LoRA-FA is a property of lr_weights.lora's own LoRA modules; use lr_weights.lora",
    "unit": "a setting of lr_weights.dylora; LyCORIS' own DyLoRA (algo=dylora) takes block_size",
}
# The Kohya GUI passes these with LyCORIS types, but lycoris.kohya's create_network never reads them
# (train_on_input stays IA3's default, rank_dropout_scale stays off): accepted, said, not used.
_IGNORED_BY_LYCORIS_KOHYA = ("rank_dropout_scale", "train_on_input")
# Shared by lr_weights and lycoris.kohya; lycoris-lora reads them, we read them too.
_SHARED = ("conv_dim", "conv_alpha", "dropout", "rank_dropout", "module_dropout", "loraplus_lr_ratio", "loraplus_unet_lr_ratio", "loraplus_text_encoder_lr_ratio")


def split_args(kwargs: Mapping[str, Any]) -> Tuple[Dict[str, Any], Dict[str, Any]]:
    """network_args -> (lr_weights' block args, lycoris.kohya's args). An arg neither knows is an error."""
    lycoris_keys = lycoris_arg_names()
    ours: Dict[str, Any] = {}
    theirs: Dict[str, Any] = {}
    known = sorted(set(KNOWN_KEYS) | set(lycoris_keys) | {"conv_dims", "conv_alphas"})
    for key, value in kwargs.items():
        if key in _NOT_FOR_LYCORIS:
            if value is None or str(value).strip().lower() in ("", "0", "false", "none"):
                continue
            raise NetworkArgError(key, value, f"no {key} with lr_weights.lycoris: {_NOT_FOR_LYCORIS[key]}")
        if key in _IGNORED_BY_LYCORIS_KOHYA and key not in lycoris_keys:
            logger.warning("network arg %s=%s is passed by the Kohya GUI but lycoris.kohya does not read it; it has no effect here either.", key, value)
            continue
        if key in _SHARED:
            theirs[key] = value
            ours[key] = value
        elif key in lycoris_keys:
            theirs[key] = value
        elif key in KNOWN_KEYS or key in ("conv_dims", "conv_alphas"):
            ours[key] = value
        else:
            close = near_miss(key, known) or next(iter(difflib.get_close_matches(key, known, n=1, cutoff=0.6)), None)
            raise NetworkArgError(
                key, value,
                "an arg lr_weights.lycoris or lycoris-lora knows (names are case-sensitive)" + (f"; did you mean {close}?" if close else f" ({', '.join(known)})"),
            )
    return ours, theirs


def _check_block_args(algo: str, ours: Mapping[str, Any], theirs: Mapping[str, Any]) -> None:
    allowed = ALGO_BLOCK_ARGS.get(algo, _RANK)
    if algo == "dylora":  # LyCORIS' DyLoRA trains block_size rank rows at a time (it asserts this)
        unit = parse_int("block_size", theirs.get("block_size") or 4, minimum=1)
        for key in ("block_dims", "conv_block_dims"):
            if ours.get(key) is not None:
                bad = [d for d in str(ours[key]).split(",") if d.strip().isdigit() and int(d) % unit]
                if bad:
                    raise NetworkArgError(key, ours[key], f"dims that are multiples of block_size={unit} for algo=dylora (0 prunes a block); not: {', '.join(bad)}")
    for key in _RANK:
        if ours.get(key) is not None and key not in allowed:
            raise NetworkArgError(
                key, ours[key],
                f"no {key} with algo={algo}: {_WHY_NOT.get(algo, 'this algorithm cannot use it')}. Block LR weights "
                "(down/mid/up_lr_weight, lbw_weights) and block_lr_zero_threshold work for every algorithm"
                + (f"; algo={algo} honours {', '.join(allowed)}" if allowed else ""),
            )


def create_network(
    multiplier: float,
    network_dim: Optional[int],
    network_alpha: Optional[float],
    vae,
    text_encoder,
    unet,
    neuron_dropout: Optional[float] = None,
    **kwargs: Any,
) -> LycorisBlockNetwork:
    """A LyCORIS network (`algo=` lokr, loha, locon, ...) with lr_weights' block-wise LRs."""
    import_lycoris()
    ensure_visible()
    arch = detect_architecture(unet)
    kwargs = dict(kwargs)
    warn_on_unmatched = kwargs.pop("warn_on_unmatched", True)
    ours, theirs = split_args(kwargs)
    algo = check_algo(theirs.get("algo"))
    check_preset(theirs.get("preset"))
    ours = normalise_kwargs(ours)  # GUI aliases (conv_dims -> conv_block_dims) and typo checks
    _check_block_args(algo, ours, theirs)
    if neuron_dropout is not None:  # lycoris.kohya ignores --network_dropout; we pass it on
        theirs["dropout"] = parse_probability("neuron_dropout", neuron_dropout)
    theirs.setdefault("warn_on_unmatched", warn_on_unmatched)
    if network_alpha is None:  # sd-scripts always passes one (default 1); lycoris.kohya fails on None
        network_alpha = 1.0

    if algo not in ("lora", "locon") and any(ours.get(k) is not None for k in ("loraplus_lr_ratio", "loraplus_unet_lr_ratio", "loraplus_text_encoder_lr_ratio")):
        logger.warning("LoRA+ ratios have no effect with algo=%s: LoRA+ speeds up a LoCon's lora_up, and algo=%s has none (lycoris.kohya ignores them too).", algo, algo)
    recording = record_modules(multiplier, network_dim, network_alpha, text_encoder, unet, theirs)
    if recording.duplicates:
        logger.warning(
            "the LyCORIS preset matches %d layers twice (%s); each gets one module (lycoris.kohya stops with "
            "'duplicated lora name' here)", len(recording.duplicates), ", ".join(recording.duplicates[:4]),
        )

    # Block args parsed exactly as lr_weights.lora parses them; conv dims default to LyCORIS' own.
    block_args = {k: v for k, v in ours.items() if k not in ("conv_dim", "conv_alpha")}
    if recording.conv_dim > 0:
        block_args["conv_dim"] = str(recording.conv_dim)
        block_args["conv_alpha"] = str(recording.conv_alpha)
    settings = parse_network_settings(arch, network_dim, network_alpha, block_args, neuron_dropout)
    options = settings.options

    with lycoris_logs_forwarded():  # module constructors log too ("using full matrix mode")
        plans, modules, zero_dim_blocks = _plan(arch, settings, ours, recording)
    network = LycorisBlockNetwork(arch, plans, modules, options, multiplier=multiplier, algo=algo, zero_dim_blocks=zero_dim_blocks)
    log_created(network, f"LyCORIS {algo} network")
    return network


def _plan(arch, settings, ours: Mapping[str, Any], recording):
    """Recorded modules -> (plans, built modules, blocks whose dims are all 0), block args applied.

    Modules are built in the recorded order. A pruned module is never built, so the modules after
    it draw other random numbers than upstream's would; with no block args nothing is pruned and
    every module gets upstream's numbers.
    """
    weights = settings.options.block_lr_weights
    te_weight = settings.options.text_encoder_lr_weight
    given = {key: ours.get(key) is not None for key in BLOCK_LIST_KEYS}
    plans: List[ModulePlan] = []
    modules = {}
    unknown = []
    for record in recording.modules:
        block = -1
        dim, alpha = None, None
        if not record.is_unet:
            if te_weight == 0:  # LBW BASE = 0: the text encoders train at LR 0, so no modules
                continue
        else:
            block = block_index(record.lora_name, arch)
            if block < 0:
                if weights is not None or settings.block_mode:
                    unknown.append(record.lora_name)
            else:
                if weights is not None and weights[block] == 0:
                    continue
                conv = _is_conv_kxk(record.layer)
                dims_key, alphas_key = ("conv_block_dims", "conv_block_alphas") if conv else ("block_dims", "block_alphas")
                if given[dims_key]:
                    dim = (settings.conv_block_dims if conv else settings.block_dims)[block]
                    if dim == 0:
                        continue
                if given[alphas_key]:
                    alpha = (settings.conv_block_alphas if conv else settings.block_alphas)[block]
        try:
            module = record.build(dim=dim, alpha=alpha)
        except NotImplementedError as error:  # "Cannot copy out of meta tensor": a weightless model
            raise ValueError(
                f"{record.module_class.__name__} ({record.lora_name}) copies the base layer's weights, which this model "
                f"does not hold (meta device: lr-weights plan); count its params as the layer's ({error})"
            ) from None
        modules[record.lora_name] = module
        plans.append(ModulePlan(Target(record.lora_name, record.layer, block, record.is_unet), dim or 0, alpha or 0.0))
    if unknown:
        logger.warning(
            "%d U-Net layers are in no known %s block; they train with weight 1.0 and the base dim: %s",
            len(unknown), arch.name.upper(), ", ".join(unknown[:8]) + (" ..." if len(unknown) > 8 else ""),
        )
    zero_dim_blocks = []
    if given["block_dims"]:
        for i in range(arch.num_blocks):
            if i in arch.moduleless or (weights is not None and weights[i] == 0):
                continue
            if settings.block_dims[i] == 0 and (settings.conv_block_dims is None or settings.conv_block_dims[i] == 0):
                zero_dim_blocks.append(i)
    return plans, modules, zero_dim_blocks


def _is_conv_kxk(layer) -> bool:
    kernel = getattr(layer, "kernel_size", None)
    return kernel is not None and tuple(kernel)[0] != 1  # LyCORIS' own rule: the first kernel dim


def create_network_from_weights(
    multiplier: float,
    file: Optional[str],
    vae,
    text_encoder,
    unet,
    weights_sd=None,
    for_inference: bool = False,
    **kwargs: Any,
) -> Tuple[LycorisBlockNetwork, dict]:
    """A network holding the modules of a LyCORIS file (any algorithm), built by lycoris-lora from
    the file's tensors. Block LR weights, LoRA+ ratios and dropouts in kwargs are honoured for
    training (--dim_from_weights); for inference only the block weights are kept."""
    import_lycoris()
    ensure_visible()
    arch = detect_architecture(unet)
    if weights_sd is None:
        weights_sd = load_lora_file(file)
    ours, _theirs = split_args({k: v for k, v in kwargs.items() if k != "warn_on_unmatched"})
    options = options_from_weights(arch, normalise_kwargs(ours), for_inference)

    wanted = set(module_names(list(weights_sd)))
    layers = []
    encoders = as_text_encoder_list(text_encoder)
    for prefix, encoder in zip(arch.encoder_prefixes(len(encoders)), encoders):
        if encoder is not None:
            layers += [(f"{prefix}_{name}".replace(".", "_"), layer, False) for name, layer in encoder.named_modules()]
    if unet is not None:
        layers += [(f"{arch.unet_prefix}_{name}".replace(".", "_"), layer, True) for name, layer in unet.named_modules()]
    plans, modules = [], {}
    for lora_name, layer, is_unet in layers:
        if lora_name not in wanted or lora_name in modules:
            continue
        with lycoris_logs_forwarded():
            module = module_from_state_dict(weights_sd, lora_name, layer)
        if module is None:
            continue
        module.multiplier = multiplier
        modules[lora_name] = module
        block = block_index(lora_name, arch) if is_unet else -1
        plans.append(ModulePlan(Target(lora_name, layer, block, is_unet), int(getattr(module, "lora_dim", 0) or 0), 0.0))
    unmatched = sorted(wanted - set(modules))
    if unmatched and not modules:
        raise ValueError(
            f"none of the {len(unmatched)} modules in {file or 'the weights'} matches a layer of this model (a file for another "
            f"architecture?), e.g. {', '.join(unmatched[:3])}"
        )
    if unmatched:
        logger.warning("%s: %d modules match no layer of this model and are ignored, e.g. %s", file or "weights", len(unmatched), ", ".join(unmatched[:3]))
    network = LycorisBlockNetwork(arch, plans, modules, options, multiplier=multiplier, algo="from file")
    log_created(network, "LyCORIS network from weights")
    return network, weights_sd
