"""Copy-in shim for an sd-scripts checkout (HunyuanImage 2.1).

Copy this file into sd-scripts' `networks/` folder (with the `lr_weights` package installed in the
same environment) and use `hunyuan_image_train_network.py --network_module networks.lora_hunyuan_image_lr_weights`.
It only re-exports the installed module, so there is one implementation to update.
"""

from lr_weights.hunyuan_image import *  # noqa: F401,F403
from lr_weights.hunyuan_image import create_network, create_network_from_weights  # noqa: F401
