"""Copy-in shim for an sd-scripts checkout.

Copy this file into sd-scripts' `networks/` folder (with the `lr_weights` package and lycoris-lora
installed in the same environment) and use `--network_module networks.lycoris_lr_weights`. It only
re-exports the installed module, so there is one implementation to update.
"""

from lr_weights.lycoris import *  # noqa: F401,F403
from lr_weights.lycoris import create_network, create_network_from_weights  # noqa: F401
