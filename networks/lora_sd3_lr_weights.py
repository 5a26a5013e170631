"""Copy-in shim for an sd-scripts checkout (SD3 / SD3.5).

Copy this file into sd-scripts' `networks/` folder (with the `lr_weights` package installed in the
same environment) and use `sd3_train_network.py --network_module networks.lora_sd3_lr_weights`.
It only re-exports the installed module, so there is one implementation to update.
"""

from lr_weights.sd3 import *  # noqa: F401,F403
from lr_weights.sd3 import create_network, create_network_from_weights  # noqa: F401
