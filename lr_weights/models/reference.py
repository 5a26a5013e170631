"""Reference models for planning: sd-scripts' module trees (SD1/SD2/SDXL, FLUX.1-dev, ...) without weights.

The skeletons in `lr_weights/models/data/` were recorded from sd-scripts' own model classes (names, class
names, layer shapes); which skeletons make up a model is its family's data (archs/, `models=`).
Rebuilt on the `meta` device they cost no memory and need no download, and target discovery sees
exactly what it sees in a real run. A checkpoint given by the user is only read for its key names
(or a diffusers folder for its layout), and archs/detect.py tells which model it is.
"""

from __future__ import annotations

import contextlib
import json
import os
from typing import Any, Iterator, Tuple

import torch

from lr_weights.archs.detect import model_from_checkpoint_keys, model_from_diffusers_folder, model_names, model_signature

MODELS = model_names()
_DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data")


def _skeleton(name: str) -> Any:
    from lr_weights.models.skeleton import build_from_skeleton

    with open(os.path.join(_DATA, f"{name}.json"), encoding="utf-8") as handle:
        return build_from_skeleton(json.load(handle), device="meta")


def build_reference_model(model: str) -> Tuple[Any, torch.nn.Module]:
    """(text_encoder, unet) on the meta device, as sd-scripts hands them to a network module: one
    text encoder, or a list of them when the model has several (SDXL, FLUX: 12B never allocated)."""
    signature = model_signature(model)
    encoders = [_skeleton(name) for name in signature.text_encoder_skeletons]
    return (encoders[0] if len(encoders) == 1 else encoders), _skeleton(signature.denoiser_skeleton)


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


def model_of_checkpoint(path: str) -> str:
    """The model (sd1, sd2, sdxl, flux, ...) of a single-file checkpoint or a diffusers folder; reads names only."""
    path = os.fspath(path)
    if os.path.isdir(path):
        unet_config = os.path.join(path, "unet", "config.json")
        if not os.path.isfile(unet_config):
            raise ValueError(f"{path} is a folder without unet/config.json (not a diffusers model folder)")
        with open(unet_config, encoding="utf-8") as handle:
            config = json.load(handle)
        return model_from_diffusers_folder(lambda folder: os.path.isdir(os.path.join(path, folder)), config)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"checkpoint not found: {path}")
    if path.lower().endswith(".safetensors"):
        from safetensors import safe_open

        try:
            with safe_open(path, framework="pt") as handle:
                keys = list(handle.keys())
        except Exception as error:
            raise ValueError(f"{path} is not a readable safetensors file ({type(error).__name__}: {error})") from None
        return model_from_checkpoint_keys(keys, path)
    return model_from_checkpoint_keys(list(load_torch_checkpoint(path, "meta")), path)


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
