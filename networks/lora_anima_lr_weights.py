"""Copy-in shim for an sd-scripts checkout (Anima).

Copy this file into sd-scripts' `networks/` folder (with the `lr_weights` package installed in the
same environment) and use `anima_train_network.py --network_module networks.lora_anima_lr_weights`.
It only re-exports the installed module, so there is one implementation to update.
"""

from lr_weights.anima import *  # noqa: F401,F403
from lr_weights.anima import create_network, create_network_from_weights  # noqa: F401
