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
  loads the checkpoint into it (every key, nothing else).

The tokenizer needs no patch: the harness put it in the HF cache sd-scripts reads. Everything else
(trainer, strategies, network module) is the real code.
"""

from __future__ import annotations

import sys

try:  # imported as tests.e2e.run_lumina_sd_scripts
    from .run_flux_sd_scripts import install_tiny_ae, run_with_tiny_config, tiny_loader
except ImportError:  # executed as a script: this folder is sys.path[0]
    from run_flux_sd_scripts import install_tiny_ae, run_with_tiny_config, tiny_loader  # type: ignore[no-redef]


def install_tiny_models(cfg: dict) -> None:
    from transformers import Gemma2Config, Gemma2Model

    from library import lumina_models, lumina_util

    install_tiny_ae(cfg["ae"])
    lumina_models.LuminaParams.get_2b_config = classmethod(lambda cls: cls(**cfg["lumina"]))

    lumina_util.load_gemma2 = tiny_loader(lambda: Gemma2Model(Gemma2Config(**cfg["gemma2"])), "Gemma2")


def main() -> None:
    run_with_tiny_config(sys.argv[1:], "run_lumina_sd_scripts.py", install_tiny_models)


if __name__ == "__main__":
    main()
