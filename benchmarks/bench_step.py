"""Train-step time and memory on an SD1.5-size U-Net: frozen base, ours, upstream — same process.

    python benchmarks/bench_step.py                       # CPU defaults: 16x16 latent, batch 1
    SD_SCRIPTS_DIR=/path/to/sd-scripts python benchmarks/bench_step.py --latent 32 --reps 5

One step = zero_grad, forward, MSE loss, backward, AdamW step (none for the frozen base, whose
input requires grad: the least backward any adapter needs). Configurations run interleaved,
`--reps` rounds of `--steps` steps each after one untimed warm-up round; medians are compared.
Memory: the activation bytes autograd saves for backward (exact, from saved_tensors_hooks), and
the peak over a step — CUDA max_memory_allocated on a GPU, resident-set growth on a CPU.
The U-Net is lr_weights.models.tiny with real SD1.5 widths (860M parameters, random init).
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import io
import logging
import random
import time
from dataclasses import dataclass, field
from typing import Callable, List, Optional

from _common import RssPeak, import_upstream, machine, median, setup_threads, table

import torch

from lr_weights import lora
from lr_weights.adapters.perf import saved_activation_bytes
from lr_weights.models.tiny import SD15_UNET, CLIPTextModel, TextEncoderConfig, UNet2DConditionModel


@dataclass
class Config:
    name: str
    build: Optional[Callable]  # (te, unet) -> (network, apply, remove); None = frozen base
    network: object = None
    apply: Callable = None
    remove: Callable = None
    optimizer: object = None
    times: List[float] = field(default_factory=list)
    peaks: List[int] = field(default_factory=list)
    saved: int = 0


def ours(module, dim, alpha, **args):
    def build(te, unet):
        with contextlib.redirect_stdout(io.StringIO()):
            network = module.create_network(1.0, dim, alpha, None, te, unet, **args)
        network.apply_to(te, unet, False, True)
        return network, lambda: [m.apply_to() for m in network.all_loras], network.restore

    return build


def upstream(module, dim, alpha, **args):
    def build(te, unet):
        with contextlib.redirect_stdout(io.StringIO()):
            network = module.create_network(1.0, dim, alpha, None, te, unet, **args)
            layers = [m.org_module for m in network.unet_loras]
            network.apply_to(te, unet, False, True)
        pairs = list(zip(layers, network.unet_loras))

        def apply():
            for layer, m in pairs:
                layer.forward = m.forward

        def remove():
            for layer, _ in pairs:
                del layer.forward

        return network, apply, remove

    return build


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--latent", type=int, default=16, help="latent side (512 px image = 64)")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--steps", type=int, default=1)
    parser.add_argument("--dim", type=int, default=16)
    parser.add_argument("--bf16", action="store_true", help="autocast to bf16 (GPU)")
    parser.add_argument("--only", default="", help="comma-separated substrings of config names to run")
    options = parser.parse_args()
    threads = setup_threads()
    logging.disable(logging.INFO)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    up_lora, how = import_upstream("lora")
    up_dylora, _ = import_upstream("dylora") if up_lora else (None, None)
    try:
        from lr_weights import dylora as our_dylora
    except ImportError:
        our_dylora = None
    print(f"machine: {machine()}\nupstream: {how if up_lora else 'not run (' + how + ')'}")
    print(f"SD1.5 U-Net, latent {options.latent}x{options.latent}, batch {options.batch}, rank {options.dim}, "
          f"{'bf16 autocast' if options.bf16 else 'fp32'}, {options.reps} rounds x {options.steps} steps, {threads} thread(s)")

    d, a = options.dim, options.dim // 2
    locon = dict(conv_dim=str(d // 2), conv_alpha=str(d // 4))
    configs = [Config("frozen base", None), Config("ours LoRA", ours(lora, d, a)), Config("ours LoRA-FA", ours(lora, d, a, fa="1"))]
    if up_lora:
        configs.append(Config("upstream LoRA", upstream(up_lora, d, a)))
    configs.append(Config("ours LoCon", ours(lora, d, a, **locon)))
    if up_lora:
        configs.append(Config("upstream LoCon", upstream(up_lora, d, a, **locon)))
    if our_dylora:
        configs.append(Config("ours DyLoRA", ours(our_dylora, d, a, unit="4")))
    if up_dylora:
        configs.append(Config("upstream DyLoRA", upstream(up_dylora, d, a, unit="4")))
    if options.only:
        keep = options.only.split(",")
        configs = [c for c in configs if c.build is None or any(k in c.name for k in keep)]

    torch.manual_seed(0)
    unet = UNet2DConditionModel(SD15_UNET).to(device).requires_grad_(False)
    te = CLIPTextModel(TextEncoderConfig(width=768, layers=1))  # only for create_network; not adapted
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(options.batch, 4, options.latent, options.latent, generator=generator).to(device)
    context = torch.randn(options.batch, 77, 768, generator=generator).to(device)
    t = torch.full((options.batch,), 500, device=device)
    frozen = list(unet.parameters())

    for config in configs:
        if config.build is None:
            continue
        torch.manual_seed(0)
        random.seed(0)
        config.network, config.apply, config.remove = config.build(te, unet)
        config.network.to(device).train()
        groups = config.network.prepare_optimizer_params(None, 1e-4, 1e-4)
        groups = groups[0] if isinstance(groups, tuple) else groups
        config.optimizer = torch.optim.AdamW(groups, lr=1e-4)
        config.remove()

    def step(config):
        sample = x.detach().requires_grad_(config.build is None)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=options.bf16):
            loss = (unet(sample, t, context).float() - x).square().mean()
        loss.backward()
        if config.optimizer is not None:
            config.optimizer.step()
            config.optimizer.zero_grad(set_to_none=True)

    def forward_only(config):
        sample = x.detach().requires_grad_(config.build is None)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=options.bf16):
            return unet(sample, t, context)

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize()

    for round_ in range(options.reps + 1):  # round 0 warms up and measures saved activations
        for config in configs:
            if config.build is not None:
                config.apply()
            gc.collect()
            if round_ == 0:
                params = frozen + ([] if config.network is None else list(config.network.parameters()))
                config.saved = saved_activation_bytes(lambda: forward_only(config), exclude=params)
                step(config)
            else:
                if device.type == "cuda":
                    torch.cuda.reset_peak_memory_stats()
                    base_memory = torch.cuda.memory_allocated()
                sync()
                with RssPeak() as rss:
                    start = time.perf_counter()
                    for _ in range(options.steps):
                        step(config)
                    sync()
                    config.times.append((time.perf_counter() - start) / options.steps)
                config.peaks.append(torch.cuda.max_memory_allocated() - base_memory if device.type == "cuda" else rss.delta)
            if config.build is not None:
                config.remove()

    base = configs[0]
    base_time, base_saved = median(base.times), base.saved
    by_name = {c.name: c for c in configs}
    rows = []
    for config in configs:
        t_med = median(config.times)
        ref = by_name.get(config.name.replace("ours", "upstream")) if config.name.startswith("ours") else None
        if config.name == "ours LoRA-FA":
            ref = by_name.get("upstream LoRA")
        rows.append((
            config.name,
            f"{t_med:.3f}",
            f"{100 * (t_med / base_time - 1):+.1f}%",
            f"{t_med / median(ref.times):.3f}" if ref else "-",
            f"{(config.saved - base_saved) / 2**20:.1f}",
            f"{(config.saved - base_saved) / (ref.saved - base_saved):.3f}" if ref and ref.saved != base_saved else "-",
            f"{median(config.peaks) / 2**20:.0f}",
            f"{median(config.peaks) / median(ref.peaks):.3f}" if ref and median(ref.peaks) > 0 else "-",
        ))
    memory = "peak MiB (CUDA max allocated)" if device.type == "cuda" else "peak MiB (RSS growth)"
    print(table(("config", "s/step", "vs frozen", "time ours/up", "adapter saved MiB", "saved ours/up", memory, "peak ours/up"), rows))
    parts = []
    for name in ("LoRA", "LoCon", "DyLoRA"):
        if f"ours {name}" in by_name and f"upstream {name}" in by_name:
            o, u = by_name[f"ours {name}"], by_name[f"upstream {name}"]
            parts.append(f"{name} {median(o.times) / median(u.times):.3f}")
    fa, plain = by_name.get("ours LoRA-FA"), by_name.get("ours LoRA")
    fa_note = ""
    if fa and plain and plain.saved > base_saved:
        # Can exceed 100 %: the frozen-base run also keeps what its input's gradient needs.
        fa_note = (f"; saved activations over the frozen base: LoRA {(plain.saved - base_saved) / 2**20:.1f} MiB, "
                   f"LoRA-FA {(fa.saved - base_saved) / 2**20:.1f} MiB (-{100 * (1 - (fa.saved - base_saved) / (plain.saved - base_saved)):.0f}%)")
    print("summary: step time ours/upstream " + (", ".join(parts) if parts else "n/a (no upstream)") +
          f"; ours LoRA over frozen base {100 * (median(plain.times) / base_time - 1):+.1f}%" + fa_note)


if __name__ == "__main__":
    main()
