"""Reference models for planning: sd-scripts' SD1/SD2/SDXL and FLUX.1-dev module trees without weights.

The skeletons in `lr_weights/models/data/` were recorded from sd-scripts' own model classes (names, class
names, layer shapes). Rebuilt on the `meta` device they cost no memory and need no download, and
target discovery sees exactly what it sees in a real run. A checkpoint given by the user is only
read for its key names, to tell which of the three it is.
"""

from __future__ import annotations

import contextlib
import json
import os
from typing import Any, Iterator, List, Tuple

import torch


MODELS = ("sd1", "sd2", "sdxl", "flux")
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
    if model == "flux":  # FLUX.1-dev, CLIP-L and T5-XXL as flux_utils builds them (12B never allocated)
        return [_skeleton("flux_te1"), _skeleton("flux_te3")], _skeleton("flux_dev")
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
    if any(k.startswith(("conditioner.embedders.1.", "model.diffusion_model.label_emb.")) for k in keys):
        return "sdxl"
    if any(k.startswith("model.diffusion_model.") for k in keys):
        return "sd2" if any(k.startswith("cond_stage_model.model.") for k in keys) else "sd1"
    raise ValueError(f"{source} is not a Stable Diffusion checkpoint this tool knows (no model.diffusion_model.* keys)")


def model_of_checkpoint(path: str) -> str:
    """sd1, sd2 or sdxl for a single-file checkpoint or a diffusers folder; reads names only."""
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
    return _model_from_keys(list(load_torch_checkpoint(path, "meta")), path)


def load_torch_checkpoint(path: str, map_location: str) -> dict:
    """The state dict of a .ckpt/.pt checkpoint (its "state_dict" entry when it has one); tensors only
    (weights_only), on `map_location` ("meta" reads names and shapes without the data)."""
    try:
        loaded = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as error:
        raise ValueError(f"{path} is not a readable checkpoint ({type(error).__name__}: {error})") from None
    if isinstance(loaded, dict) and isinstance(loaded.get("state_dict"), dict):
        loaded = loaded["state_dict"]
    if not isinstance(loaded, dict):
        raise ValueError(f"{path} does not hold a state dict")
    return loaded
