"""FLUX train-step time: lr_weights.flux vs upstream networks.lora_flux, same process, interleaved.

    python benchmarks/bench_flux_step.py                          # tiny FLUX (19/38 blocks, hidden 64)
    python benchmarks/bench_flux_step.py --real-single            # one SingleStreamBlock at FLUX.1 width
    SD_SCRIPTS_DIR=/path/to/sd-scripts python benchmarks/bench_flux_step.py --split-qkv

One step = forward, MSE loss, backward, AdamW step over the adapters (the frozen base's input
requires grad in the baseline, the least backward any adapter needs). Medians of `--reps` rounds
after a warm-up round; ratios are ours / upstream in this process. Upstream's split_qkv crashes on
double blocks, so --split-qkv compares the single blocks only (train_blocks=single).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import logging
import time

from _common import import_upstream, machine, median, setup_threads, table

import torch

from lr_weights import flux as our_flux
from lr_weights.models.tiny_flux import FluxConfig, Flux, SingleStreamBlock


class OneSingleBlock(torch.nn.Module):
    """A FLUX.1-width single block under the name lora_flux targets (single_blocks.0)."""

    def __init__(self, hidden: int, heads: int):
        super().__init__()
        self.single_blocks = torch.nn.ModuleList([SingleStreamBlock(hidden, heads, 4.0)])

    def forward(self, x, vec):
        return self.single_blocks[0](x, vec)


def build(module, model, dim, args):
    with contextlib.redirect_stdout(io.StringIO()):
        network = module.create_network(1.0, dim, dim, None, [None, None], model, **args)
        network.apply_to([None, None], model, False, True)
    groups = network.prepare_optimizer_params_with_multiple_te_lrs(None, 1e-4, 1e-4)[0]
    return network, torch.optim.AdamW(groups, lr=1e-4)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--real-single", action="store_true", help="one SingleStreamBlock at hidden 3072 (FLUX.1) instead of the tiny FLUX")
    parser.add_argument("--split-qkv", action="store_true")
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--dim", type=int, default=16)
    parser.add_argument("--reps", type=int, default=3)
    options = parser.parse_args()
    threads = setup_threads()
    logging.disable(logging.INFO)
    upstream, how = import_upstream("lora_flux")
    print(f"machine: {machine()}\nupstream: {how if upstream else 'not run (' + how + ')'}")
    torch.manual_seed(0)
    if options.real_single:
        model = OneSingleBlock(3072, 24).requires_grad_(False)
        x = torch.randn(1, options.tokens, 3072)
        vec = torch.randn(1, 3072)
        run = lambda sample: model(sample, vec)  # noqa: E731
        what = f"one SingleStreamBlock, hidden 3072, {options.tokens} tokens"
    else:
        cfg = FluxConfig(hidden=64, heads=2)
        model = Flux(cfg).requires_grad_(False)
        x = torch.randn(1, options.tokens, cfg.in_channels)
        txt, t, y = torch.randn(1, 8, cfg.context_in_dim), torch.rand(1), torch.randn(1, cfg.vec_in_dim)
        run = lambda sample: model(sample, txt, t, y)  # noqa: E731
        what = f"tiny FLUX (19/38 blocks, hidden 64), {options.tokens} image tokens"
    args = {"split_qkv": "True", "train_blocks": "single"} if options.split_qkv else {}
    print(f"{what}, rank {options.dim}{', split_qkv' if options.split_qkv else ''}, {threads} thread(s)")

    networks = {}
    for name, module in (("ours", our_flux), ("upstream", upstream)):
        if module is None:
            continue
        torch.manual_seed(0)
        networks[name] = build(module, model, options.dim, args)
        if name == "ours":  # unpatch the layers (our modules keep the plain forward) before upstream patches them
            for lora in networks[name][0].unet_loras:
                lora.base_layer.__dict__.pop("forward", None)
    layers = {m.lora_name: m.base_layer for m in networks["ours"][0].unet_loras}
    forwards = {name: {m.lora_name: m.forward for m in net.unet_loras} for name, (net, _) in networks.items()}
    configs = ["frozen base"] + list(networks)

    def attach(name):
        for lora_name, layer in layers.items():
            if name == "frozen base":
                layer.__dict__.pop("forward", None)
            else:
                layer.forward = forwards[name][lora_name]

    times = {name: [] for name in configs}
    for round_ in range(options.reps + 1):
        for name in configs:
            attach(name)
            sample = x.detach().requires_grad_(name == "frozen base")
            start = time.perf_counter()
            loss = run(sample).square().mean()
            loss.backward()
            if name in networks:
                networks[name][1].step()
                networks[name][1].zero_grad(set_to_none=True)
            if round_:
                times[name].append(time.perf_counter() - start)
    base = median(times["frozen base"])
    rows = []
    for name in configs:
        value = median(times[name])
        rows.append((name, f"{value:.4f}", f"{100 * (value / base - 1):+.1f}%", f"{value / median(times['upstream']):.3f}" if "upstream" in times and name == "ours" else "-"))
    print(table(("config", "step s", "vs frozen", "ours/upstream"), rows))


if __name__ == "__main__":
    main()
