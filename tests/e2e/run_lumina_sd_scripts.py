"""Run sd-scripts' lumina_train_network.py on the tiny Lumina 2 that lumina_harness.py builds.

    python run_lumina_sd_scripts.py --tiny-config MODEL_DIR/tiny_config.json -- /path/to/sd-scripts/lumina_train_network.py --arg ...

sd-scripts always builds the 2B NextDiT (`LuminaParams.get_2b_config`), Gemma2 2B (a config
written inside `lumina_util.load_gemma2`) and the FLUX AE (`flux_models.configs["schnell"]`).
Before the training script runs (unchanged, as `__main__` in this process, from its own
directory) this wrapper points those at the tiny sizes in tiny_config.json:

* `lumina_models.LuminaParams.get_2b_config`: returns the tiny LuminaParams (read by
  `NextDiT_2B_GQA_patch2_Adaln_Refiner`, which `lumina_util.load_lumina_model` calls);
* `flux_models.configs[...].ae_params`: the tiny AE (as for FLUX; `lumina_util.load_ae` reads it);
* `lumina_util.load_gemma2`: same signature, but builds a tiny Gemma2Model from the config and
  loads the checkpoint strictly.

The tokenizer needs no patch: the harness put it in the HF cache sd-scripts reads. Everything else
(trainer, strategies, network module) is the real code.
"""

from __future__ import annotations

import json
import sys

try:  # imported as tests.e2e.run_lumina_sd_scripts
    from .run_flux_sd_scripts import checkpoint_state_dict, install_tiny_ae
    from .run_sd_scripts import run_training_script, split_argv
except ImportError:  # executed as a script: this folder is sys.path[0]
    from run_flux_sd_scripts import checkpoint_state_dict, install_tiny_ae  # type: ignore[no-redef]
    from run_sd_scripts import run_training_script, split_argv  # type: ignore[no-redef]


def install_tiny_models(cfg: dict) -> None:
    from transformers import Gemma2Config, Gemma2Model

    from library import lumina_models, lumina_util

    install_tiny_ae(cfg["ae"])
    lumina_models.LuminaParams.get_2b_config = classmethod(lambda cls: cls(**cfg["lumina"]))

    def load_gemma2(ckpt_path, dtype, device, disable_mmap=False, state_dict=None):
        gemma2 = Gemma2Model(Gemma2Config(**cfg["gemma2"]))
        info = gemma2.load_state_dict(checkpoint_state_dict(ckpt_path, dtype, device, state_dict), strict=True)
        if dtype is not None:
            gemma2 = gemma2.to(dtype)
        print(f"LRW_E2E tiny Gemma2 loaded: {info}", flush=True)
        return gemma2

    lumina_util.load_gemma2 = load_gemma2


def main() -> None:
    opts, script, script_args = split_argv(
        sys.argv[1:],
        "usage: run_lumina_sd_scripts.py --tiny-config JSON -- SCRIPT [ARGS...]",
        lambda ap: ap.add_argument("--tiny-config", required=True),
    )
    with open(opts.tiny_config, encoding="utf-8") as handle:
        cfg = json.load(handle)
    run_training_script(script, script_args, lambda: install_tiny_models(cfg))


if __name__ == "__main__":
    main()
