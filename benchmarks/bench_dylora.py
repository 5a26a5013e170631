"""Step time of lr_weights.dylora against sd-scripts' networks.dylora, measured in one process.

    SD_SCRIPTS_DIR=/path/to/sd-scripts python benchmarks/bench_dylora.py [--dim 32 --unit 4 --steps 20]

Both networks train the same SD1-layout model (lr_weights.models.tiny, real block structure, widths
chosen by --widths) with AdamW, one step = forward + backward + optimizer step. Upstream's file is
executed from the checkout (tests/upstream_dylora.py); without SD_SCRIPTS_DIR only our time and the
frozen-base time are printed. Prints the ratio ours / upstream (< 1 is faster). Not a test.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from lr_weights import dylora  # noqa: E402
from lr_weights.models.tiny import UNetConfig, build_tiny_sd  # noqa: E402
from tests.upstream_dylora import load_upstream_dylora, sd_scripts_dir  # noqa: E402


def make_batch(config: UNetConfig, batch: int, size: int):
    generator = torch.Generator().manual_seed(0)
    return (
        torch.randn(batch, config.in_channels, size, size, generator=generator),
        torch.randint(0, 1000, (batch,), generator=generator),
        torch.randint(0, 1000, (batch, 16), generator=generator),
    )


def time_steps(build, config, args) -> float:
    te, unet = build_tiny_sd(0, unet=config)
    te.to(args.device)
    unet.to(args.device)
    te.requires_grad_(False)
    unet.requires_grad_(False)
    x, t, ids = (tensor.to(args.device) for tensor in make_batch(config, args.batch, args.size))
    if build is None:  # frozen base: the least backward any adapter needs
        x.requires_grad_(True)
        step = lambda: unet(x, t, te(ids)).float().pow(2).mean().backward()  # noqa: E731
    else:
        network = build(1.0, args.dim, args.dim / 2, None, te, unet, unit=str(args.unit), conv_dim=str(args.dim))
        network.apply_to(te, unet, True, True)
        network.to(args.device)
        network.train()
        params = network.prepare_optimizer_params(1e-4, 1e-4, 1e-4)
        params = params[0] if isinstance(params, tuple) else params
        optimizer = torch.optim.AdamW(params, lr=1e-4)

        def step():
            optimizer.zero_grad(set_to_none=True)
            unet(x, t, te(ids)).float().pow(2).mean().backward()
            optimizer.step()

    random.seed(0)
    for _ in range(args.warmup):
        step()
    synchronize = torch.cuda.synchronize if args.device.startswith("cuda") else (lambda: None)
    synchronize()
    start = time.perf_counter()
    for _ in range(args.steps):
        step()
    synchronize()
    return (time.perf_counter() - start) / args.steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dim", type=int, default=32)
    parser.add_argument("--unit", type=int, default=4)
    parser.add_argument("--widths", default="64,128,256,256")
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds; the best time of each is kept")
    args = parser.parse_args()
    widths = tuple(int(w) for w in args.widths.split(","))
    config = UNetConfig(widths=widths, heads=4, context_dim=128, groups=32)

    builds = {"frozen base": None, "lr_weights.dylora": dylora.create_network}
    if sd_scripts_dir() is not None:
        builds["sd-scripts networks.dylora"] = load_upstream_dylora().create_network
    best = {name: float("inf") for name in builds}
    for _ in range(args.rounds):
        for name, build in builds.items():
            best[name] = min(best[name], time_steps(build, config, args))
    print(f"torch {torch.__version__}, {args.device}, {torch.get_num_threads()} threads, widths {widths}, dim {args.dim}, unit {args.unit}, "
          f"batch {args.batch}x{args.size}^2, best of {args.rounds} x {args.steps} steps")
    for name, seconds in best.items():
        print(f"  {name:<28} {seconds * 1000:8.1f} ms/step")
    if "sd-scripts networks.dylora" in best:
        print(f"ratio lr_weights.dylora / networks.dylora: {best['lr_weights.dylora'] / best['sd-scripts networks.dylora']:.3f}")
    else:
        print("SD_SCRIPTS_DIR not set: no upstream ratio")


if __name__ == "__main__":
    main()
