"""Everything lr_weights asks of the lycoris-lora library, in one place.

lycoris-lora (`pip install lycoris-lora`, the `lycoris` package) is an optional extra: it is
imported here, lazily, and nowhere else. Module selection, module classes, their math and their
file format are lycoris-lora's; this file only records which modules `lycoris.kohya` would build,
so that lr_weights.lycoris can build the same ones (or fewer, per block) in the same order.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from dataclasses import dataclass
from typing import Any, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple

import torch
from torch import nn

from lr_weights.errors import NetworkArgError

# Tested: 4.0.0 (all but algo=full, whose FullModule cannot be restored there), 4.1.0, 4.1.3.
# 3.x builds the same LoKr/LoHa/LoCon tensors but differs elsewhere (no ia3 in kohya, older groups).
MINIMUM_MAJOR = 4
INSTALL_HINT = "lr_weights.lycoris needs the lycoris-lora library: pip install lycoris-lora"

# Attributes that lycoris.kohya's `apply_preset` writes onto the LycorisNetworkKohya class. They
# are saved before and restored after every recording, so one network's preset never reaches the
# next one made in the same process (upstream leaks them).
_PRESET_CLASS_ATTRIBUTES = (
    "ENABLE_CONV",
    "UNET_TARGET_REPLACE_MODULE",
    "UNET_TARGET_REPLACE_NAME",
    "TEXT_ENCODER_TARGET_REPLACE_MODULE",
    "TEXT_ENCODER_TARGET_REPLACE_NAME",
    "MODULE_ALGO_MAP",
    "NAME_ALGO_MAP",
    "USE_FNMATCH",
    "TARGET_EXCLUDE_NAME",
)
# Recording swaps lycoris.kohya's module table and class attributes for its duration; two threads
# recording at once would see each other's, so they take turns.
_RECORDING = threading.Lock()


def import_lycoris():
    """The `lycoris` package, or an ImportError with the one-line install hint."""
    try:
        import lycoris
        import lycoris.kohya  # noqa: F401  (the sd-scripts entry point is what we build on)
    except ImportError as error:
        raise ImportError(f"{INSTALL_HINT} ({error})") from None
    version = lycoris_version()
    if version.split(".")[0].isdigit() and int(version.split(".")[0]) < MINIMUM_MAJOR:
        logging.getLogger("lr_weights.lycoris").warning(
            "lycoris-lora %s is older than the 4.x lr_weights.lycoris is tested with; pip install -U lycoris-lora", version
        )
    return lycoris


def lycoris_version() -> str:
    try:
        from importlib.metadata import version

        return version("lycoris-lora")
    except Exception:  # not installed as a distribution (a source checkout on sys.path)
        return "unknown"


def algorithms() -> List[str]:
    """The `algo` values lycoris.kohya accepts, from lycoris-lora's own table."""
    import_lycoris()
    from lycoris.wrapper import network_module_dict

    return sorted(network_module_dict)


def builtin_presets() -> List[str]:
    import_lycoris()
    from lycoris.config import PRESET

    return sorted(PRESET)


def lycoris_arg_names() -> frozenset:
    """The network_args lycoris.kohya.create_network reads, taken from its code (so a newer
    lycoris-lora's new args are known without a release of lr_weights)."""
    import_lycoris()
    import lycoris.kohya as kohya

    code = kohya.create_network.__code__
    found = {c for c in code.co_consts if isinstance(c, str) and c.isidentifier()}
    from lycoris.wrapper import deprecated_arg_dict

    return frozenset(found | set(deprecated_arg_dict) | set(KNOWN_LYCORIS_ARGS))


# What lycoris-lora 4.x's lycoris.kohya.create_network reads (the list above adds a newer one's).
KNOWN_LYCORIS_ARGS = (
    "algo", "preset", "conv_dim", "conv_alpha", "dropout", "rank_dropout", "module_dropout",
    "use_tucker", "use_cp", "use_conv_cp", "disable_conv_cp", "use_scalar", "block_size", "train_norm",
    "constraint", "constrain", "rescaled", "dora_wd", "wd_on_output", "full_matrix", "bypass_mode",
    "rs_lora", "unbalanced_factorization", "train_t5xxl", "train_llm_adapter", "decompose_both", "factor",
    "loraplus_lr_ratio", "loraplus_unet_lr_ratio", "loraplus_text_encoder_lr_ratio",
)


@dataclass(frozen=True)
class RecordedModule:
    """One module lycoris.kohya would build: its class and the exact arguments it would get."""

    lora_name: str
    layer: nn.Module
    module_class: type
    args: Tuple[Any, ...]  # (lora_name, layer, multiplier, dim, alpha, dropout, rank_dropout, module_dropout, use_tucker)
    kwargs: Tuple[Tuple[str, Any], ...]
    is_unet: bool
    built: Optional[nn.Module] = None  # a module lycoris built directly (NormModule with train_norm)

    @property
    def dim(self):
        return self.args[3]

    @property
    def alpha(self):
        return self.args[4]

    def build(self, dim=None, alpha=None) -> nn.Module:
        """The real lycoris-lora module; `dim` / `alpha` replace the recorded ones when given."""
        if self.built is not None:
            return self.built
        args = list(self.args)
        if dim is not None:
            args[3] = dim
        if alpha is not None:
            args[4] = alpha
        return self.module_class(*args, **dict(self.kwargs))


class _Placeholder:
    """What the recording factory hands lycoris.kohya instead of a module: a name and nothing else."""

    def __init__(self, lora_name: str, record: RecordedModule, duplicate: bool):
        # A layer matched twice (preset `full` on SD1: TimestepEmbedding and its names) gets a name
        # upstream's duplicate assertion cannot trip over; it is dropped after recording.
        self.lora_name = lora_name + ("\0duplicate" if duplicate else "")
        self.record = record
        self.duplicate = duplicate


@dataclass(frozen=True)
class Recording:
    """What lycoris.kohya.create_network decided, without having built a single tensor."""

    modules: Tuple[RecordedModule, ...]  # text encoder modules first, then U-Net, in creation order
    duplicates: Tuple[str, ...]  # names matched twice by the preset (upstream crashes on them)
    conv_dim: int
    conv_alpha: float


@contextlib.contextmanager
def _preset_kept_local(network_class) -> Iterator[None]:
    saved = {name: getattr(network_class, name) for name in _PRESET_CLASS_ATTRIBUTES if name in network_class.__dict__}
    try:
        yield
    finally:
        for name in _PRESET_CLASS_ATTRIBUTES:
            if name in saved:
                setattr(network_class, name, saved[name])


class _Forward(logging.Handler):
    """Hands lycoris-lora's log records to lr_weights' logger (which sd-scripts and the CLI show)."""

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        # lycoris-lora warns about every class of its all-models target list that an SD model
        # lacks (Flux, Wan, Qwen blocks ...): true and useless here, so it goes to debug.
        quiet = message.startswith(("UNet: No modules matched", "Text Encoder: No modules matched", "No modules matched"))
        level = logging.DEBUG if quiet else record.levelno
        _LOGGER.log(level, "lycoris-lora: %s", message)


_LOGGER = logging.getLogger("lr_weights.lycoris")


@contextlib.contextmanager
def lycoris_logs_forwarded() -> Iterator[None]:
    """While lycoris-lora runs for us: its warnings through lr_weights' logger, its info lines
    (which would count placeholders while recording) dropped; its own stdout handler paused."""
    from lycoris.logging import logger as lycoris_logger

    level, handlers, propagate = lycoris_logger.level, list(lycoris_logger.handlers), lycoris_logger.propagate
    forward = _Forward()
    lycoris_logger.handlers = [forward]
    lycoris_logger.propagate = False
    lycoris_logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        lycoris_logger.handlers = handlers
        lycoris_logger.propagate = propagate
        lycoris_logger.setLevel(level)


def record_modules(multiplier, network_dim, network_alpha, text_encoder, unet, lycoris_kwargs: Mapping[str, Any]) -> Recording:
    """Run lycoris.kohya.create_network with a factory that records instead of building.

    lycoris-lora chooses the layers, names, algorithms and per-module configs exactly as it would
    for `--network_module lycoris.kohya`; no RNG is consumed, so building the recorded modules in
    order afterwards gives the same tensors as upstream for the same seed.
    """
    import_lycoris()
    import lycoris.kohya as kohya
    from lycoris.wrapper import network_module_dict

    network_class = kohya.LycorisNetworkKohya
    module_globals = network_class.__init__.__globals__
    recorded: List[_Placeholder] = []
    seen = set()

    def recorder(module_class):
        def record(lora_name, layer, *args, **kwargs):
            entry = RecordedModule(lora_name, layer, module_class, (lora_name, layer) + args, tuple(kwargs.items()), False)
            placeholder = _Placeholder(lora_name, entry, lora_name in seen)
            seen.add(lora_name)
            recorded.append(placeholder)
            return placeholder

        return record

    table = {algo: recorder(cls) for algo, cls in network_module_dict.items()}
    with _RECORDING, _preset_kept_local(network_class), lycoris_logs_forwarded():
        original_table = module_globals.get("network_module_dict")
        module_globals["network_module_dict"] = table
        try:
            network = kohya.create_network(multiplier, network_dim, network_alpha, None, text_encoder, unet, **dict(lycoris_kwargs))
        finally:
            module_globals["network_module_dict"] = original_table

    unet_ids = {id(m) for m in getattr(network, "unet_loras", [])}
    modules = []
    duplicates = []
    for entry in list(network.text_encoder_loras) + list(network.unet_loras):
        is_unet = id(entry) in unet_ids
        if isinstance(entry, _Placeholder):
            if entry.duplicate:
                duplicates.append(entry.record.lora_name)
                continue
            record = entry.record
            modules.append(RecordedModule(record.lora_name, record.layer, record.module_class, record.args, record.kwargs, is_unet))
        else:  # built by lycoris itself (NormModule for train_norm): kept as it is
            layer = entry.org_module[0] if hasattr(entry, "org_module") else None
            modules.append(RecordedModule(entry.lora_name, layer, type(entry), (), (), is_unet, built=entry))
    return Recording(tuple(modules), tuple(duplicates), int(network.conv_lora_dim), float(network.conv_alpha))


# ---- files: modules from a state dict, ΔW per module -------------------------------------------


def module_from_state_dict(weights: Mapping[str, torch.Tensor], lora_name: str, layer: nn.Module) -> Optional[nn.Module]:
    """lycoris-lora's own module for `lora_name` in `weights` (any algorithm it knows), or None."""
    import_lycoris()
    import inspect

    from lycoris.modules import get_module, make_module

    module_class, params = get_module(weights, lora_name)
    if module_class is None:
        return None
    # lycoris-lora 4.1.3's IA3 reads two tensors (weight, on_input) but its builder takes one, so
    # upstream cannot load an IA3 file at all; a builder that takes fewer gets the leading ones.
    takes = len(inspect.signature(module_class.make_module_from_state_dict).parameters) - 2
    if 0 < takes < len(params):
        dropped = [p for p in params[takes:] if p is not None and bool(torch.as_tensor(p).any())]
        if dropped:
            raise ValueError(f"{lora_name}: lycoris-lora {lycoris_version()} cannot rebuild this {module_class.__name__} (its builder ignores tensors the file sets)")
        params = params[:takes]
    return make_module(module_class, params, lora_name, layer)


def delta_weight(module: nn.Module, multiplier: float = 1.0) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
    """(ΔW, Δbias) of one lycoris-lora module, exactly as its forward applies it at `multiplier`.

    For LoHa and LoKr, lycoris-lora 4.1.3's get_weight already applies alpha/dim and its
    get_diff_weight / get_merged_weight apply it again, so merging or extracting with them disagrees
    with what was trained whenever alpha != dim (3.x's get_weight has no scale, and there they
    agree). The forward uses get_weight x scalar (4.x) or x scale x scalar (3.x); which one this
    lycoris-lora does is read from the module itself: does get_weight follow `scale`?
    """
    layer = module.org_module[0]
    weight = layer.weight.detach()
    kind = getattr(type(module), "name", "")
    with torch.no_grad():
        if kind in ("loha", "kron"):
            shape = tuple(weight.shape)
            diff = module.get_weight(shape)
            scale = module.scale
            try:
                module.scale = scale * 2 if scale else 1.0
                follows_scale = not torch.equal(module.get_weight(shape), diff)
            finally:
                module.scale = scale
            diff = diff * module.scalar if follows_scale else diff * scale * module.scalar
            diff = diff.reshape(weight.shape).to(weight.dtype)
            if getattr(module, "wd", False):
                return module.apply_weight_decompose(weight + diff, multiplier) - weight, None
            return diff * multiplier, None
        if getattr(module, "wd", False):
            merged, bias = module.get_merged_weight(multiplier, tuple(weight.shape))
            return merged.reshape(weight.shape) - weight, None
        diff, bias = module.get_diff_weight(multiplier, tuple(weight.shape))
        return diff.reshape(weight.shape), bias


def module_names(keys: Sequence[str]) -> List[str]:
    """Module names of a LyCORIS state dict, in first-appearance order."""
    names: Dict[str, None] = {}
    for key in keys:
        if "." in key:
            names.setdefault(key.split(".", 1)[0], None)
    return list(names)


def algo_of(weights: Mapping[str, torch.Tensor], lora_name: str) -> Optional[str]:
    """The algorithm of one module in a file, by lycoris-lora's own key detection."""
    import_lycoris()
    from lycoris.modules import MODULE_LIST

    for module_class in MODULE_LIST:
        if module_class.algo_check(weights, lora_name):
            return getattr(module_class, "name", None) or module_class.__name__
    return None


def file_size_bytes(path: str) -> int:
    return os.path.getsize(path)


def check_algo(value: Any) -> str:
    """`algo` as lycoris.kohya reads it (default lora, case-insensitive), refused when unknown."""
    algo = (str(value) if value is not None else "lora").strip().lower() or "lora"
    valid = algorithms()
    if algo not in valid:
        import difflib

        close = difflib.get_close_matches(algo, valid, n=1, cutoff=0.6)
        hint = f"; did you mean {close[0]}?" if close else ""
        raise NetworkArgError("algo", value, f"one of the algorithms lycoris-lora {lycoris_version()} offers: {', '.join(valid)}{hint}")
    return algo


def check_preset(value: Any) -> None:
    """A built-in preset name or a readable TOML preset file (upstream: a bare assertion)."""
    if value is None:
        return
    presets = builtin_presets()
    if str(value) in presets:
        return
    if not os.path.isfile(str(value)):
        raise NetworkArgError("preset", value, f"a built-in preset ({', '.join(presets)}) or the path of a LyCORIS preset TOML file")
    from lycoris.utils.preset import read_preset

    if read_preset(str(value)) is None:
        raise NetworkArgError("preset", value, "a LyCORIS preset TOML file that lycoris-lora can read (see its message above)")
