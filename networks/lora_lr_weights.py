"""Copy-in shim for an sd-scripts checkout.

Copy this file into sd-scripts' `networks/` folder (with the `lr_weights` package installed in the
same environment) and use `--network_module networks.lora_lr_weights`. It only re-exports the
installed module, so there is one implementation to update.
"""

from lr_weights.lora import *  # noqa: F401,F403
from lr_weights.lora import create_network, create_network_from_weights, get_block_lr_weight  # noqa: F401
