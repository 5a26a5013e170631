"""sd-scripts entry point: `--network_module lr_weights.dylora --network_args unit=4 ...`.

A drop-in for sd-scripts' `networks.dylora`: the same training rule (one random slice of `unit`
rank rows trains per step, output scaled by sqrt(dim / slice_end)) and the same file (plain
`lora_down`/`lora_up`/`alpha`, loadable anywhere a LoRA loads). On top of upstream it takes every
network arg `lr_weights.lora` takes — block LR weights, block dims/alphas, the zero threshold,
LoRA+, dropouts, `lbw_weights` — names the SDXL encoders `lora_te1`/`lora_te2` (upstream names both
`lora_te`, and the second overwrites the first on save), and returns `(params, descriptions)` only
to hosts that read them. Upstream demands conv_dim == network_dim and gives convs network_alpha;
here conv_dim and conv_alpha mean what they mean for lr_weights.lora.
"""

from __future__ import annotations

import functools
import logging
import weakref
from typing import Any, Optional, Tuple

import torch

from lr_weights.network.assembly import log_created, plan_network, plan_network_from_weights
from lr_weights.adapters.dylora import DyLoRAModule
from lr_weights.errors import NetworkArgError
from lr_weights.lora import get_block_lr_weight
from lr_weights.network.lora_network import LoRANetwork
from lr_weights.args.settings import check_dylora_dims, parse_unit

logger = logging.getLogger(__name__)

__all__ = ["DyLoRAModule", "DyLoRANetwork", "create_network", "create_network_from_weights", "get_block_lr_weight"]


class DyLoRANetwork(LoRANetwork):
    """LoRANetwork whose modules train DyLoRA rank slices; everything else is LoRANetwork's."""

    def __init__(self, arch, plans, options, multiplier: float = 1.0, settings=None, unit: int = 1):
        super().__init__(arch, plans, options, multiplier=multiplier, settings=settings, module_factory=functools.partial(DyLoRAModule, unit=unit))
        self.unit = unit
        self._watch_optimizer_steps()

    def _watch_optimizer_steps(self) -> None:
        """Settle right after every optimizer step that updates this network's weights.

        torch's post-step hooks are process-wide; the hook holds the network only weakly and is
        removed when the network is collected. Optimizers that write through raw pointers bump no
        version counter either; for them the next settle() (save, eval, max-norm) compares values.
        """
        try:
            from torch.optim.optimizer import register_optimizer_step_post_hook
        except ImportError:  # torch < 2.0: the per-forward version check does the work
            return
        network = weakref.ref(self)

        def after_step(optimizer, args, kwargs) -> None:
            alive = network()
            if alive is not None:
                alive.settle_after_step(optimizer)

        weakref.finalize(self, register_optimizer_step_post_hook(after_step).remove)

    def settle_after_step(self, optimizer) -> None:
        stepped = {id(p) for group in optimizer.param_groups for p in group["params"]}
        for module in self.all_loras:
            if module._snapshot is not None and (id(module.lora_down.weight) in stepped or id(module.lora_up.weight) in stepped):
                module.settle(stepped=True)

    # Everything that reads or rescales the weights settles them first: rows that got no gradient
    # since the last step are put back where that step found them (DyLoRAModule.settle). The
    # optimizer step hook normally did that already; this covers optimizers it does not see.

    def settle(self) -> None:
        for module in self.all_loras:
            module.settle()

    def state_dict(self, *args, **kwargs):  # save_weights, accelerate's save_state
        self.settle()
        return super().state_dict(*args, **kwargs)

    def train(self, mode: bool = True):
        if not mode:
            self.settle()
        return super().train(mode)

    def apply_max_norm_regularization(self, max_norm_value: float, device) -> Tuple[int, float, float]:
        self.settle()
        result = super().apply_max_norm_regularization(max_norm_value, device)
        # Rescaling is a legitimate change to every row: the rescaled weights are the new snapshot.
        with torch.no_grad():
            for module in self.all_loras:
                if module._snapshot is not None:
                    module._take_snapshot(keep_trained=True)
        return result


def create_network(
    multiplier: float,
    network_dim: Optional[int],
    network_alpha: Optional[float],
    vae,
    text_encoder,
    unet,
    neuron_dropout: Optional[float] = None,
    **kwargs: Any,
) -> DyLoRANetwork:
    """Build a DyLoRA network for `text_encoder` (one, or a list of two for SDXL) and `unet`."""
    plan = plan_network(network_dim, network_alpha, text_encoder, unet, neuron_dropout, kwargs)
    unit = parse_unit(kwargs)
    check_dylora_dims(plan.settings, unit)
    network = DyLoRANetwork(plan.arch, plan.plans, plan.options, multiplier=multiplier, settings=plan.settings, unit=unit)
    log_created(network, f"DyLoRA network (unit {unit})")
    return network


def create_network_from_weights(
    multiplier: float,
    file: Optional[str],
    vae,
    text_encoder,
    unet,
    weights_sd=None,
    for_inference: bool = False,
    **kwargs: Any,
) -> Tuple[DyLoRANetwork, dict]:
    """A network shaped like the modules in `file` (or `weights_sd`); the weights are not loaded.

    For training (`--dim_from_weights`) every dim in the file must be a multiple of `unit`; for
    inference and merging the file is a plain LoRA and `unit` plays no part.
    """
    plan, weights_sd = plan_network_from_weights(file, text_encoder, unet, weights_sd, for_inference, kwargs)
    unit = 1 if for_inference else parse_unit(plan.args)
    odd = sorted({p.dim for p in plan.plans if p.dim % unit})
    if odd:
        raise NetworkArgError("unit", plan.args.get("unit"), f"a divisor of every dim in {file or 'the weights'} (it holds dims {', '.join(map(str, odd))})")
    network = DyLoRANetwork(plan.arch, plan.plans, plan.options, multiplier=multiplier, unit=unit)
    log_created(network, f"DyLoRA network (unit {unit})")
    return network, weights_sd

