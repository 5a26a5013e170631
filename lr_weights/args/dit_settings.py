"""DiT-kind network_args -> one frozen, validated settings object (the counterpart of settings.py).

Upstream `networks/lora_flux.py` args (and those of the modules after its pattern) keep their
meaning; which args a family has (component dims, in layers, block selections, encoder flags) is
read from its architecture (archs/dit.py). Where upstream asserts, crashes inside a list
comprehension, or logs and drops a bad value, we raise a NetworkArgError naming the key and the
value. The block-wise args (`double_lr_weight`, `single_lr_weight`, `block_lr_zero_threshold`,
`double_block_dims` ..., `lbw_weights`) go through the same parsing as SD's (settings.py,
weights.py, lbw.py) with the family's architecture.
"""

from __future__ import annotations

import ast
import logging
import re
from dataclasses import dataclass
from typing import Any, Dict, Mapping, Optional, Tuple

from lr_weights.archs.base import Architecture
from lr_weights.errors import NetworkArgError
from lr_weights.args.keys import check_unknown_keys, refuse_foreign_keys
from lr_weights.args.scalars import parse_alpha, parse_float, parse_int, parse_upstream_flag
from lr_weights.args.settings import DEFAULT_ALPHA, DEFAULT_DIM, TrainingOptions, parse_training_options

logger = logging.getLogger(__name__)

SHARED_KEYS = (
    "dropout",
    "rank_dropout",
    "module_dropout",
    "block_lr_zero_threshold",
    "lbw_weights",
    "loraplus_lr_ratio",
    "loraplus_unet_lr_ratio",
    "loraplus_text_encoder_lr_ratio",
    "merge_lr_groups",
)


@dataclass(frozen=True)
class DiTSettings:
    """Resolved settings of a DiT-kind LoRA network (FLUX: lora_flux's args)."""

    arch: Architecture
    dim: int
    alpha: float
    train_blocks: str  # a value of arch.dit.train_blocks (FLUX: all | double | single)
    # Upstream's block selections, one per arch.dit.block_selections (None = all); they prune
    # only modules at the default dim.
    selections: Tuple[Optional[Tuple[bool, ...]], ...]
    split_qkv: bool
    verbose: bool
    flags: Tuple[Tuple[str, bool], ...]  # the encoders' on/off args (train_t5xxl), by name
    type_dims: Tuple[Optional[int], ...]  # one per arch.dit.component_dims entry
    in_dims: Optional[Tuple[int, ...]]  # one per arch.dit.in_layers entry
    reg_dims: Tuple[Tuple[str, int], ...]  # (regex, dim), first match wins
    reg_lrs: Tuple[Tuple[str, float], ...]  # (regex, absolute LR), first match wins
    ggpo_beta: Optional[float]
    ggpo_sigma: Optional[float]
    # Per flat block (FLUX: 59) when double/single_block_dims/alphas are given, else None.
    block_dims: Optional[Tuple[int, ...]]
    block_alphas: Optional[Tuple[float, ...]]
    options: TrainingOptions
    # arch.dit.path_filter: the exclude regexes (the default first, then the user's) and the includes.
    exclude_patterns: Tuple[str, ...] = ()
    include_patterns: Tuple[str, ...] = ()
    # conv_dim / conv_alpha for k x k in-layer convs (arch.dit.in_conv; lora_sd3's x_embedder).
    conv_dim: Optional[int] = None
    conv_alpha: float = 1.0

    def __getattr__(self, name: str):
        # upstream's flag names read as attributes (settings.train_t5xxl), as its network has them
        for key, value in self.__dict__.get("flags", ()):
            if key == name:
                return value
        raise AttributeError(name)

    @property
    def flag_values(self) -> Dict[str, bool]:
        return dict(self.flags)

    def selected(self, block: int) -> bool:
        """Whether upstream's block selection of `block`'s stack keeps it (True outside stacks)."""
        stack = self.arch.stack_of(block)
        if stack is None:
            return True
        for (_, stack_name), selection in zip(self.arch.dit.block_selections, self.selections):
            if stack_name == stack.name and selection is not None:
                return selection[block - stack.start]
        return True

    @property
    def ggpo(self) -> bool:
        return self.ggpo_beta is not None and self.ggpo_sigma is not None

    def base_dim_alpha(self, block: int) -> Tuple[int, float]:
        """The default dim/alpha of a flow-model layer in `block` before component dims apply."""
        dim = self.dim if self.block_dims is None or block < 0 else self.block_dims[block]
        alpha = self.alpha if self.block_alphas is None or block < 0 else self.block_alphas[block]
        return dim, alpha

    def block_weight(self, block: int) -> float:
        weights = self.options.block_lr_weights
        if weights is None or not 0 <= block < len(weights):
            return 1.0
        return weights[block]

    def text_encoder_weight(self, label: str) -> float:
        return dict(self.options.text_encoder_lr_weights).get(label, self.options.text_encoder_lr_weight)


def parse_block_selection(key: str, value: Any, total: int) -> Tuple[bool, ...]:
    """`all`, `none`, `` or comma lists of indices and `a-b` ranges (0-based), as upstream."""
    text = str(value).strip()
    if text == "all":
        return (True,) * total
    if text in ("none", ""):
        return (False,) * total
    expected = f"all, none, or comma-separated block indices 0..{total - 1} and ranges a-b (e.g. 0-3,7)"
    selected = [False] * total
    for part in text.split(","):
        bounds = [b.strip() for b in part.split("-")] if "-" in part.strip()[1:] else [part.strip()]
        try:
            numbers = [int(b) for b in bounds]
        except ValueError:
            raise NetworkArgError(key, value, f"{expected}; {part.strip()!r} is not") from None
        if len(numbers) > 2 or any(not 0 <= n < total for n in numbers) or numbers[0] > numbers[-1]:
            raise NetworkArgError(key, value, f"{expected}; {part.strip()!r} is not")
        for index in range(numbers[0], numbers[-1] + 1):
            selected[index] = True
    return tuple(selected)


def parse_in_dims(key: str, value: Any, names: Tuple[str, ...]) -> Tuple[int, ...]:
    """One dim per in layer (FLUX in_dims: img, time, vector, guidance, txt), `[...]` allowed."""
    text = str(value).strip()
    if text.startswith("[") and text.endswith("]"):
        text = text[1:-1]
    example = ",".join(["4"] + ["0"] * (len(names) - 2) + ["4"])
    expected = f"{len(names)} comma-separated dims ({', '.join(names)}), 0 to skip one, e.g. {example}"
    entries = [e.strip() for e in text.split(",")]
    if len(entries) != len(names):
        raise NetworkArgError(key, value, f"{expected}; got {len(entries)} values")
    dims = []
    for name, entry in zip(names, entries):
        try:
            dims.append(parse_int(key, entry))
        except NetworkArgError:
            raise NetworkArgError(key, value, f"{expected}; the {name} entry is {entry!r}") from None
    return tuple(dims)


def parse_regex_pairs(key: str, value: Any, number) -> Tuple[Tuple[str, Any], ...]:
    """`regex=value,regex=value` (split on `,` and the first `=`, as upstream); bad pairs, values
    and regexes are errors (upstream logs and drops them, or skips a bad regex silently)."""
    pairs = []
    for pair in str(value).split(","):
        pair = pair.strip()
        if not pair:
            continue
        if "=" not in pair:
            raise NetworkArgError(key, value, f"comma-separated regex=value pairs; {pair!r} has no '='")
        pattern, _, text = pair.partition("=")
        pattern = pattern.strip()
        try:
            re.compile(pattern)
        except re.error as error:
            raise NetworkArgError(key, value, f"valid regular expressions; {pattern!r}: {error}") from None
        pairs.append((pattern, number(key, text.strip(), pair)))
    return tuple(pairs)


def parse_pattern_list(key: str, value: Any) -> Tuple[str, ...]:
    """A Python literal of one regex or a list of them (`['.*mlp.*', 'blocks\\.0\\..*']`), as
    lora_anima reads exclude/include_patterns (ast.literal_eval); every entry must compile. Upstream
    raises a bare SyntaxError or TypeError, or logs an invalid regex and drops it."""
    expected = "a regex in quotes or a list of them, as a Python literal, e.g. ['.*cross_attn.*', 'blocks\\.0\\..*']"
    try:
        parsed = ast.literal_eval(str(value).strip())
    except (ValueError, SyntaxError):
        raise NetworkArgError(key, value, f"{expected}; this is not a Python literal (a bare regex needs quotes)") from None
    patterns = parsed if isinstance(parsed, list) else [parsed]
    for pattern in patterns:
        if not isinstance(pattern, str):
            raise NetworkArgError(key, value, f"{expected}; {pattern!r} is not a string")
        try:
            re.compile(pattern)
        except re.error as error:
            raise NetworkArgError(key, value, f"{expected}; {pattern!r} is not a valid regex: {error}") from None
    return tuple(patterns)


def _check_stack_flags(arch: Architecture, args: Mapping[str, Any], flags: Mapping[str, bool]) -> None:
    """An LR-weight list for a stack that exists only with an on/off arg (Anima's LLM adapter) needs it."""
    for stack_name, flag in arch.dit.stack_flags:
        key = arch.stack(stack_name).lr_weight_key
        if args.get(key) is not None and not flags.get(flag):
            raise NetworkArgError(key, args[key], f"to be given with {flag}=true: without it the {stack_name} blocks get no modules")


def _reg_dim(key: str, text: str, pair: str) -> int:
    try:
        return parse_int(key, text)
    except NetworkArgError:
        raise NetworkArgError(key, pair, "regex=dim with a whole number >= 0") from None


def reg_lr(key: str, text: str, pair: str) -> float:
    try:
        lr = parse_float(key, text)
    except NetworkArgError:
        lr = -1.0
    if lr < 0:
        raise NetworkArgError(key, pair, "regex=lr with a learning rate >= 0")
    return lr


def _stack_list(key: str, value: Any, size: int, item) -> Tuple:
    entries = [e.strip() for e in str(value).split(",")]
    if len(entries) != size:
        raise NetworkArgError(key, value, f"exactly {size} comma-separated values, got {len(entries)}")
    values = []
    for position, entry in enumerate(entries):
        try:
            values.append(item(key, entry))
        except NetworkArgError as error:
            raise NetworkArgError(key, value, f"{size} comma-separated values, each {error.expected} (entry {position} is {entry!r})") from None
    return tuple(values)


def known_keys(arch: Architecture) -> frozenset:
    return frozenset(arch.own_keys + SHARED_KEYS + arch.dit.no_effect_keys)


def normalise_dit_kwargs(arch: Architecture, kwargs: Mapping[str, Any]) -> Dict[str, Any]:
    """Refuse other families' args and likely typos; warn about args without effect or unknown."""
    known = known_keys(arch)
    refuse_foreign_keys(kwargs, arch, known)
    args = dict(kwargs)
    check_unknown_keys(args, known, arch.entry_point, logger)
    for key in arch.dit.no_effect_keys:
        if args.get(key) is not None:
            # still a number, as upstream parses it (conv_dim an int, conv_alpha a float)
            if key.endswith("_dim"):
                parse_int(key, args[key])
            else:
                parse_float(key, str(args[key]).strip())
            logger.warning("%s=%s has no effect: %s.", key, args[key], arch.dit.no_effect_reason)
    return args


def parse_dit_settings(arch: Architecture, network_dim: Any, network_alpha: Any, kwargs: Mapping[str, Any], neuron_dropout: Any = None) -> DiTSettings:
    """Everything a DiT-kind `create_network` needs, validated. Raises NetworkArgError on bad input."""
    layout = arch.dit
    args = normalise_dit_kwargs(arch, kwargs)
    dim = DEFAULT_DIM if network_dim is None else parse_int("network_dim", network_dim, minimum=1)
    alpha = DEFAULT_ALPHA if network_alpha is None else parse_alpha("network_alpha", network_alpha)

    train_blocks = layout.train_blocks_values[0] if args.get("train_blocks") is None else str(args["train_blocks"]).strip()
    if train_blocks not in layout.train_blocks_values:
        raise NetworkArgError("train_blocks", args["train_blocks"], ", ".join(layout.train_blocks_values))
    selections = tuple(
        None if args.get(key) is None else parse_block_selection(key, args[key], arch.stack(stack_name).size) for key, stack_name in layout.block_selections
    )
    type_dims = tuple(None if args.get(key) is None else parse_int(key, args[key]) for key, _ in layout.component_dims)
    in_key = layout.in_dims_key
    in_dims = None if in_key is None or args.get(in_key) is None else parse_in_dims(in_key, args[in_key], layout.in_names)
    reg_dims = () if args.get("network_reg_dims") is None else parse_regex_pairs("network_reg_dims", args["network_reg_dims"], _reg_dim)
    reg_lrs = () if args.get("network_reg_lrs") is None else parse_regex_pairs("network_reg_lrs", args["network_reg_lrs"], reg_lr)
    ggpo = _ggpo(args)

    flags = tuple((key, parse_upstream_flag(key, args.get(key))) for key in layout.flags)
    _check_stack_flags(arch, args, dict(flags))
    excludes = includes = ()
    if layout.path_filter is not None:
        path_filter = layout.path_filter
        user_excludes = () if args.get(path_filter.exclude_key) is None else parse_pattern_list(path_filter.exclude_key, args[path_filter.exclude_key])
        excludes = user_excludes + (path_filter.default_exclude,)
        includes = () if args.get(path_filter.include_key) is None else parse_pattern_list(path_filter.include_key, args[path_filter.include_key])
    options = parse_training_options(arch, args, neuron_dropout)
    block_dims, block_alphas = _block_dims(arch, args, dim, alpha)
    conv_dim, conv_alpha = _conv_dim_alpha(layout, args)
    settings = DiTSettings(
        arch=arch,
        dim=dim,
        alpha=alpha,
        train_blocks=train_blocks,
        selections=selections,
        split_qkv=parse_upstream_flag("split_qkv", args.get("split_qkv")),
        verbose=parse_upstream_flag("verbose", args.get("verbose")),
        flags=flags,
        type_dims=type_dims,
        in_dims=in_dims,
        reg_dims=reg_dims,
        reg_lrs=reg_lrs,
        ggpo_beta=ggpo["ggpo_beta"],
        ggpo_sigma=ggpo["ggpo_sigma"],
        block_dims=block_dims,
        block_alphas=block_alphas,
        options=options,
        exclude_patterns=excludes,
        include_patterns=includes,
        conv_dim=conv_dim,
        conv_alpha=conv_alpha,
    )
    _check_in_dims_weight(settings)
    return settings


def _conv_dim_alpha(layout, args: Mapping[str, Any]) -> Tuple[Optional[int], float]:
    """conv_dim (and conv_alpha, 1.0 unless given, as upstream) where the layout has in-layer convs."""
    if not layout.in_conv or args.get("conv_dim") is None:
        if layout.in_conv and args.get("conv_alpha") is not None:
            logger.warning("conv_alpha=%s has no effect without conv_dim (upstream ignores it too).", args["conv_alpha"])
        return None, 1.0
    conv_alpha = 1.0 if args.get("conv_alpha") is None else parse_alpha("conv_alpha", args["conv_alpha"])
    return parse_int("conv_dim", args["conv_dim"]), conv_alpha


def _ggpo(args: Mapping[str, Any]) -> Dict[str, Optional[float]]:
    ggpo = {}
    for key in ("ggpo_beta", "ggpo_sigma"):
        ggpo[key] = None if args.get(key) is None else parse_float(key, str(args[key]).strip())
    given = [k for k, v in ggpo.items() if v is not None]
    if len(given) == 1:
        missing = "ggpo_sigma" if given[0] == "ggpo_beta" else "ggpo_beta"
        raise NetworkArgError(given[0], args[given[0]], f"to be given together with {missing} (GGPO needs both; with one upstream silently trains without it)")
    return ggpo


def _block_dims(arch: Architecture, args: Mapping[str, Any], dim: int, alpha: float) -> Tuple[Optional[Tuple[int, ...]], Optional[Tuple[float, ...]]]:
    """<stack>_block_dims and _alphas -> per flat block (blocks outside the stacks keep the base values)."""
    dims = [dim] * arch.num_blocks
    alphas = [alpha] * arch.num_blocks
    any_dims = any_alphas = False
    for stack in arch.stacks:
        if stack.dims_key is not None and args.get(stack.dims_key) is not None:
            dims[stack.start : stack.stop] = _stack_list(stack.dims_key, args[stack.dims_key], stack.size, lambda k, e: parse_int(k, e))
            any_dims = True
        if stack.alphas_key is not None and args.get(stack.alphas_key) is not None:
            alphas[stack.start : stack.stop] = _stack_list(stack.alphas_key, args[stack.alphas_key], stack.size, parse_alpha)
            any_alphas = True
    return (tuple(dims) if any_dims else None), (tuple(alphas) if any_alphas else None)


def _check_in_dims_weight(settings: DiTSettings) -> None:
    layout = settings.arch.dit
    in_block = settings.arch.block_index_of(layout.in_block)
    if settings.in_dims is not None and any(settings.in_dims) and settings.block_weight(in_block) == 0:
        logger.warning(
            "%s=%s: the %s block has weight 0 (lbw_weights), so no %s modules are made.",
            layout.in_dims_key, ",".join(map(str, settings.in_dims)), layout.in_block, layout.in_dims_key,
        )
