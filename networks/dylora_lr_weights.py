"""Copy-in shim for an sd-scripts checkout: `--network_module networks.dylora_lr_weights`.

Copy this file into sd-scripts' `networks/` folder (with the `lr_weights` package installed in the
same environment). It only re-exports the installed `lr_weights.dylora`.
"""

from lr_weights.dylora import *  # noqa: F401,F403
from lr_weights.dylora import create_network, create_network_from_weights, get_block_lr_weight  # noqa: F401
