"""Optimizer step time: upstream-style groups (one per block, LoRA+ twins) vs merge_lr_groups=1.

    python benchmarks/bench_groups.py [--reps 7] [--steps 20]

The network is SD1.5 LoCon r16 (TE 72 + U-Net 278 modules) with LoRA+, built on the recorded
skeleton; gradients are random. The update of every parameter is the same either way (see
tests/lr_weights/test_merge_groups.py): only the per-group host overhead changes.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import logging
import time

from _common import SKELETONS, machine, median, setup_threads, table

import torch

from lr_weights import lora
from lr_weights.models.skeleton import load_skeleton

LR_SETTINGS = {
    # one list given: every other block keeps 1.0, so most blocks share an LR
    "mid_lr_weight=2": {"mid_lr_weight": "2"},
    "up_lr_weight=0.5": {"up_lr_weight": "0.5"},
    # every block its own LR: nothing to merge (control)
    "sine/cosine": {"down_lr_weight": "sine+.25", "up_lr_weight": "cosine+.25"},
}


class ForeachLion(torch.optim.Optimizer):
    """Lion (Chen et al. 2023) with one foreach call per op per group, as a multi-tensor optimizer does."""

    def __init__(self, params, lr=1e-4, betas=(0.9, 0.99), weight_decay=0.0):
        super().__init__(params, dict(lr=lr, betas=betas, weight_decay=weight_decay))

    @torch.no_grad()
    def step(self):
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if not params:
                continue
            grads = [p.grad for p in params]
            avgs = [self.state[p].setdefault("exp_avg", torch.zeros_like(p)) for p in params]
            beta1, beta2 = group["betas"]
            torch._foreach_mul_(params, 1 - group["lr"] * group["weight_decay"])
            update = torch._foreach_lerp(avgs, grads, 1 - beta1)
            torch._foreach_sign_(update)
            torch._foreach_add_(params, update, alpha=-group["lr"])
            torch._foreach_lerp_(avgs, grads, 1 - beta2)


def optimizers():
    made = {
        "AdamW for-loop": lambda groups: torch.optim.AdamW(groups, lr=1e-4, foreach=False),
        "AdamW foreach": lambda groups: torch.optim.AdamW(groups, lr=1e-4, foreach=True),
    }
    try:
        torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], fused=True)
        made["AdamW fused"] = lambda groups: torch.optim.AdamW(groups, lr=1e-4, fused=True)
    except (RuntimeError, TypeError):
        pass
    made["Lion foreach"] = lambda groups: ForeachLion(groups, lr=1e-5)
    try:
        import lion_pytorch

        made["Lion (lion-pytorch)"] = lambda groups: lion_pytorch.Lion(groups, lr=1e-5)
    except ImportError:
        pass
    return made


def build(lr_args, merge):
    te, unet = load_skeleton(SKELETONS / "sd1_te.json"), load_skeleton(SKELETONS / "sd1_unet.json")
    torch.manual_seed(0)
    with contextlib.redirect_stdout(io.StringIO()):
        network = lora.create_network(
            1.0, 16, 8, None, te, unet, conv_dim="16", conv_alpha="8", loraplus_lr_ratio="4", merge_lr_groups=str(int(merge)), **lr_args
        )
    network.apply_to(te, unet, True, True)
    groups = network.prepare_optimizer_params(5e-5, 1e-4, 1e-4, with_descriptions=False)
    for p in network.parameters():
        p.grad = torch.randn_like(p) * 1e-3
    return network, groups


def host_bound(groups):
    """The same groups with every tensor replaced by one element: what is left is the per-group and
    per-tensor host time, which on a GPU is not hidden behind compute the way it is on a CPU."""
    out = []
    for group in groups:
        params = [torch.nn.Parameter(torch.zeros(1)) for _ in group["params"]]
        for p in params:
            p.grad = torch.full((1,), 1e-3)
        out.append(dict(group, params=params))
    return out


def step_time(optimizer, steps):
    optimizer.step()  # state allocation is not timed
    start = time.perf_counter()
    for _ in range(steps):
        optimizer.step()
    return (time.perf_counter() - start) / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--reps", type=int, default=7)
    parser.add_argument("--steps", type=int, default=20)
    options = parser.parse_args()
    setup_threads()
    logging.disable(logging.INFO)
    print(f"machine: {machine()}")
    rows = []
    best = (1.0, "")
    for lr_name, lr_args in LR_SETTINGS.items():
        per_block, per_block_groups = build(lr_args, merge=False)
        merged, merged_groups = build(lr_args, merge=True)
        for (opt_name, make), bound in [(o, b) for b in ("real", "host") for o in optimizers().items()]:
            if bound == "host":
                opt_name += " (host-bound)"
                opts = {"per block": make(host_bound(per_block_groups)), "merged": make(host_bound(merged_groups))}
            else:
                opts = {"per block": make(per_block_groups), "merged": make(merged_groups)}
            times = {k: [] for k in opts}
            for _ in range(options.reps):
                for key, opt in opts.items():  # interleaved
                    times[key].append(step_time(opt, options.steps))
            a, b = median(times["per block"]), median(times["merged"])
            rows.append((lr_name, opt_name, len(per_block_groups), len(merged_groups), f"{a * 1000:.2f}", f"{b * 1000:.2f}", f"{b / a:.3f}"))
            if b / a < best[0]:
                best = (b / a, f"{opt_name}, {lr_name}: {len(per_block_groups)} -> {len(merged_groups)} groups")
    print(table(("block LR", "optimizer", "groups", "merged", "ms/step per block", "ms/step merged", "merged/per block"), rows))
    print(f"summary: merge_lr_groups=1 best step-time ratio {best[0]:.3f} ({best[1]}); 'sine/cosine' is the no-merge control; "
          "'host-bound' rows time 1-element tensors: the per-group overhead a GPU step pays on the host")


if __name__ == "__main__":
    main()
