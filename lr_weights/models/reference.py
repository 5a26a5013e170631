"""Reference models for planning: sd-scripts' SD1/SD2/SDXL, FLUX.1-dev, SD3.5 medium / large and
Lumina 2 module trees without weights.

The skeletons in `lr_weights/models/data/` were recorded from sd-scripts' own model classes (names, class
names, layer shapes). Rebuilt on the `meta` device they cost no memory and need no download, and
target discovery sees exactly what it sees in a real run. A checkpoint given by the user is only
read for its key names, to tell which model it is.
"""

from __future__ import annotations

import contextlib
import json
import os
from typing import TYPE_CHECKING, Any, Iterator, List, Tuple

import torch

if TYPE_CHECKING:
    from lr_weights.archs.blocks import Architecture

MODELS = ("sd1", "sd2", "sdxl", "flux", "sd3", "sd3-large", "lumina")
# sd3: SD3.5 medium (24 joint blocks; SD3 medium has the same blocks without attn2), sd3-large: SD3.5
# large (38). Their CLIP-G and T5-XXL are the trees SDXL's te2 and FLUX's te3 files hold.
_DIT_MODELS = {
    "flux": (("flux_te1", "flux_te3"), "flux_dev"),
    "sd3": (("sd3_te1", "sdxl_te2", "flux_te3"), "sd35_medium"),
    "sd3-large": (("sd3_te1", "sdxl_te2", "flux_te3"), "sd35_large"),
    "lumina": (("lumina2_te",), "lumina2"),
}
_DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data")


def _skeleton(name: str) -> Any:
    from lr_weights.models.skeleton import build_from_skeleton

    with open(os.path.join(_DATA, f"{name}.json"), encoding="utf-8") as handle:
        return build_from_skeleton(json.load(handle), device="meta")


def build_reference_model(model: str) -> Tuple[Any, torch.nn.Module]:
    """(text_encoder, unet) on the meta device, as sd-scripts hands them to a network module."""
    if model not in MODELS:
        raise ValueError(f"model {model!r} is not known: expected one of {', '.join(MODELS)}")
    if model == "sdxl":
        return [_skeleton("sdxl_te1"), _skeleton("sdxl_te2")], _skeleton("sdxl_unet")
    if model in _DIT_MODELS:  # e.g. FLUX.1-dev, CLIP-L and T5-XXL as flux_utils builds them (12B never allocated)
        encoders, dit = _DIT_MODELS[model]
        return [_skeleton(name) for name in encoders], _skeleton(dit)
    return _skeleton(f"{model}_te"), _skeleton(f"{model}_unet")


@contextlib.contextmanager
def skipped_weight_init() -> Iterator[None]:
    """Leave new adapter tensors uninitialised while planning.

    A plan reads only shapes; initialising a rank-128 SDXL network would cost seconds and gigabytes.
    The init functions are swapped back on exit, whatever happens.
    """
    names = ("kaiming_uniform_", "uniform_", "normal_", "zeros_")
    saved = {name: getattr(torch.nn.init, name) for name in names}

    def untouched(tensor, *args, **kwargs):
        return tensor

    try:
        for name in names:
            setattr(torch.nn.init, name, untouched)
        yield
    finally:
        for name, function in saved.items():
            setattr(torch.nn.init, name, function)


def _model_from_keys(keys: List[str], source: str) -> str:
    if any(k.startswith(("double_blocks.", "model.diffusion_model.double_blocks.")) for k in keys):
        return "flux"
    joint = {k.split(".")[k.split(".").index("joint_blocks") + 1] for k in keys if k.startswith(("joint_blocks.", "model.diffusion_model.joint_blocks."))}
    if joint:
        return "sd3-large" if len(joint) > 24 else "sd3"
    if any(k.startswith(("noise_refiner.", "model.diffusion_model.noise_refiner.")) for k in keys):
        return "lumina"
    if any(k.startswith(("conditioner.embedders.1.", "model.diffusion_model.label_emb.")) for k in keys):
        return "sdxl"
    if any(k.startswith("model.diffusion_model.") for k in keys):
        return "sd2" if any(k.startswith("cond_stage_model.model.") for k in keys) else "sd1"
    raise ValueError(f"{source} is not a Stable Diffusion checkpoint this tool knows (no model.diffusion_model.* keys)")


def model_of_checkpoint(path: str) -> str:
    """sd1, sd2, sdxl, flux, sd3, sd3-large or lumina for a single-file checkpoint (sd1/sd2/sdxl also
    for a diffusers folder); reads names only."""
    path = os.fspath(path)
    if os.path.isdir(path):
        unet_config = os.path.join(path, "unet", "config.json")
        if not os.path.isfile(unet_config):
            raise ValueError(f"{path} is a folder without unet/config.json (not a diffusers model folder)")
        if os.path.isdir(os.path.join(path, "text_encoder_2")):
            return "sdxl"
        with open(unet_config, encoding="utf-8") as handle:
            config = json.load(handle)
        return "sd2" if config.get("cross_attention_dim") == 1024 else "sd1"
    if not os.path.isfile(path):
        raise FileNotFoundError(f"checkpoint not found: {path}")
    if path.lower().endswith(".safetensors"):
        from safetensors import safe_open

        try:
            with safe_open(path, framework="pt") as handle:
                keys = list(handle.keys())
        except Exception as error:
            raise ValueError(f"{path} is not a readable safetensors file ({type(error).__name__}: {error})") from None
        return _model_from_keys(keys, path)
    try:
        loaded = torch.load(path, map_location="meta", weights_only=True)
    except Exception as error:
        raise ValueError(f"{path} is not a readable checkpoint ({type(error).__name__}: {error})") from None
    if isinstance(loaded, dict) and isinstance(loaded.get("state_dict"), dict):
        loaded = loaded["state_dict"]
    if not isinstance(loaded, dict):
        raise ValueError(f"{path} does not hold a state dict")
    return _model_from_keys(list(loaded), path)


def blocks_with_modules(arch: "Architecture", include_conv: bool) -> "frozenset":
    """The block indices that hold at least one adapter module, found the way a network finds its
    targets, on sd-scripts' own module tree (SD1 stands for SD1/SD2: their blocks are laid out alike)."""
    from lr_weights.network.targets import block_targets, unet_targets

    if arch.kind == "dit":
        name = "sd3-large" if arch.name == "sd3" and arch.stack("joint").size > 24 else arch.name
        _, model = build_reference_model(name)
        return frozenset(t.block for t in block_targets(model, arch, arch.unet_target_classes) if t.block >= 0)
    _, unet = build_reference_model("sdxl" if arch.is_sdxl else "sd1")
    return frozenset(t.block for t in unet_targets(unet, arch, include_conv) if t.block >= 0)
