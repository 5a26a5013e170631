"""Run sd-scripts' flux_train_network.py on the tiny FLUX that flux_harness.py builds.

    python run_flux_sd_scripts.py --tiny-config MODEL_DIR/tiny_config.json -- /path/to/sd-scripts/flux_train_network.py --arg ...

sd-scripts takes FLUX's block counts from the checkpoint but its widths from
`library.flux_models.configs`, and builds CLIP-L, T5-XXL and the AE from fixed configs. Before the
training script runs (unchanged, as `__main__` in this process, from its own directory) this
wrapper points those at the tiny sizes in tiny_config.json:

* `flux_models.configs["dev"|"schnell"]`: FluxParams and AutoEncoderParams replaced (used by
  `flux_utils.load_flow_model` and `flux_utils.load_ae`);
* `flux_utils.load_clip_l` / `flux_utils.load_t5xxl`: same signature, but build a tiny
  CLIPTextModel / T5EncoderModel from the config before loading the checkpoint.

Everything else (trainer, strategies, network module) is the real code.
"""

from __future__ import annotations

import dataclasses
import sys
from typing import Any, Callable, Sequence

try:  # imported as tests.e2e.run_flux_sd_scripts
    from .run_sd_scripts import run_with_tiny_config
except ImportError:  # executed as a script: this folder is sys.path[0]
    from run_sd_scripts import run_with_tiny_config  # type: ignore[no-redef]


def checkpoint_state_dict(ckpt_path, dtype, device, state_dict):
    """What sd-scripts' loaders load: `state_dict` if given, else the file (cast to `dtype`)."""
    if state_dict is not None:
        return state_dict
    from safetensors.torch import load_file

    sd = load_file(ckpt_path, device=str(device))
    if dtype is not None:
        sd = {k: v.to(dtype) for k, v in sd.items()}
    return sd


def tiny_loader(build: Callable[[], Any], label: str, may_miss: Sequence[str] = ()) -> Callable[..., Any]:
    """A stand-in for one of sd-scripts' text-encoder loaders (same signature): `build()` the tiny
    model, load the checkpoint into it (every key but `may_miss` must be there, nothing else), cast."""

    def load(ckpt_path, dtype, device, disable_mmap=False, state_dict=None):
        model = build()
        info = model.load_state_dict(checkpoint_state_dict(ckpt_path, dtype, device, state_dict), strict=False)
        if info.unexpected_keys or set(info.missing_keys) - set(may_miss):
            raise RuntimeError(f"tiny {label} checkpoint mismatch: {info}")
        if dtype is not None:
            model = model.to(dtype)
        print(f"LRW_E2E tiny {label} loaded: {info}", flush=True)
        return model

    return load


def install_tiny_ae(ae_cfg: dict) -> None:
    """Every `flux_models.configs` entry gets the tiny AutoEncoderParams (Lumina's load_ae reads them too)."""
    from library import flux_models

    for name, spec in list(flux_models.configs.items()):
        flux_models.configs[name] = dataclasses.replace(spec, ae_params=flux_models.AutoEncoderParams(**ae_cfg))


def tiny_t5_loader(t5_config: dict) -> Callable[..., Any]:
    """flux_utils.load_t5xxl's stand-in (sd3_utils calls it too): a tiny T5EncoderModel. Only the tied
    input embedding may be absent from the file (it is "shared")."""
    from transformers import T5Config, T5EncoderModel

    return tiny_loader(lambda: T5EncoderModel(T5Config(**t5_config)), "T5", may_miss=("encoder.embed_tokens.weight",))


def install_tiny_models(cfg: dict) -> None:
    from transformers import CLIPTextConfig, CLIPTextModel

    from library import flux_models, flux_utils

    install_tiny_ae(cfg["ae"])
    for name, spec in list(flux_models.configs.items()):
        params = flux_models.FluxParams(**dict(cfg["flux"], guidance_embed=spec.params.guidance_embed))
        flux_models.configs[name] = dataclasses.replace(spec, params=params)

    flux_utils.load_clip_l = tiny_loader(lambda: CLIPTextModel(CLIPTextConfig(**cfg["clip"])), "CLIP-L")
    flux_utils.load_t5xxl = tiny_t5_loader(cfg["t5"])


def main() -> None:
    run_with_tiny_config(sys.argv[1:], "run_flux_sd_scripts.py", install_tiny_models)


if __name__ == "__main__":
    main()
