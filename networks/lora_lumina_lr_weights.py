"""Copy-in shim for an sd-scripts checkout (Lumina 2).

Copy this file into sd-scripts' `networks/` folder (with the `lr_weights` package installed in the
same environment) and use `lumina_train_network.py --network_module networks.lora_lumina_lr_weights`.
It only re-exports the installed module, so there is one implementation to update.
"""

from lr_weights.lumina import *  # noqa: F401,F403
from lr_weights.lumina import create_network, create_network_from_weights  # noqa: F401
