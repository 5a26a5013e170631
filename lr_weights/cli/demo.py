"""`lr-weights demo`: the whole training job on a built-in tiny SD model, on the CPU, in seconds.

It calls the network module exactly as sd-scripts' train_network.py does (create_network ->
apply_to -> prepare_optimizer_params -> train steps -> save_weights), so what it prints is what a
real run would log: the per-block table and the LR of every optimizer group.
"""

from __future__ import annotations

import argparse
import time

from lr_weights.cli._util import add_subcommand, parse_pairs

EXAMPLES = """examples:
  lr-weights demo
  lr-weights demo --steps 20 --output demo.safetensors
  lr-weights demo --network_args down_lr_weight=linear mid_lr_weight=0 up_lr_weight=reverse_linear conv_dim=4

The data and the objective are random (noise latents, random tokens), so the loss is noise and
does not go down: the demo shows the mechanics (blocks, groups, LRs, the file), not learning.
"""

DEFAULT_OUTPUT = "lr_weights_demo.safetensors"  # in this repository's .gitignore
# Metadata marking a file the demo wrote: running the demo again may replace that file, no other.
DEMO_MARK = "lr_weights_demo"
DEFAULT_ARGS = ("down_lr_weight=sine+.25", "mid_lr_weight=1", "up_lr_weight=cosine+.25")


def register(subparsers) -> None:
    parser = add_subcommand(subparsers, "demo", "train a few steps with block LRs on a built-in tiny SD model and write a LoRA file", __doc__, EXAMPLES)
    # Spelled both ways, as `plan` and sd-scripts take them.
    parser.add_argument("--network-args", "--network_args", dest="network_args", nargs="*", default=list(DEFAULT_ARGS), metavar="KEY=VALUE", help="as sd-scripts' --network_args")
    parser.add_argument("--network-dim", "--network_dim", dest="network_dim", type=int, default=4)
    parser.add_argument("--network-alpha", "--network_alpha", dest="network_alpha", type=float, default=1.0)
    parser.add_argument("--unet-lr", "--unet_lr", dest="unet_lr", type=float, default=1e-3)
    parser.add_argument("--text-encoder-lr", "--text_encoder_lr", dest="text_encoder_lr", type=float, default=5e-4)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--output", default=DEFAULT_OUTPUT, help=f"where to write the LoRA file (default {DEFAULT_OUTPUT} in the current folder)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --output file (the demo's own earlier file is replaced without it)")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    import torch

    import os

    from lr_weights import lora
    from lr_weights.files.io import check_output_path, load_lora_file
    from lr_weights.models.tiny import build_tiny_sd

    if args.steps < 1:
        raise ValueError(f"--steps={args.steps} is not valid: expected a whole number >= 1")
    output = os.path.abspath(check_output_path(args.output, "--output"))
    if os.path.exists(output) and not args.overwrite and not _written_by_the_demo(output):
        raise FileExistsError(f"{args.output} exists and is not a file the demo wrote; pass --overwrite to replace it")
    kwargs = parse_pairs(args.network_args, "--network_args")
    text_encoder, unet = build_tiny_sd(seed=args.seed)
    text_encoder.requires_grad_(False)
    unet.requires_grad_(False)

    torch.manual_seed(args.seed)
    network = lora.create_network(1.0, args.network_dim, args.network_alpha, None, text_encoder, unet, **kwargs)
    network.apply_to(text_encoder, unet, True, True)
    params, descriptions = network.prepare_optimizer_params(args.text_encoder_lr, args.unet_lr, args.unet_lr, with_descriptions=True)
    optimizer = torch.optim.AdamW(params, lr=args.unet_lr)
    network.prepare_grad_etc(text_encoder, unet)
    network.on_epoch_start(text_encoder, unet)

    print("data and objective are random (noise latents, random tokens): the loss is noise, not learning")
    print("optimizer groups:")
    for description, group in zip(descriptions, params):
        n_params = sum(p.numel() for p in group["params"])
        print(f"  {description:<20} lr={group['lr']:.4g}  tensors={len(group['params'])}  params={n_params:,}")

    # A denoising objective on random latents: enough to move every trained block.
    generator = torch.Generator().manual_seed(args.seed)
    started = time.perf_counter()
    for step in range(1, args.steps + 1):
        latents = torch.randn(2, 4, 16, 16, generator=generator)
        noise = torch.randn(latents.shape, generator=generator)
        timesteps = torch.randint(0, 1000, (2,), generator=generator)
        tokens = torch.randint(0, text_encoder.cfg.vocab, (2, text_encoder.cfg.max_length), generator=generator)
        prediction = unet(latents + noise, timesteps, text_encoder(tokens))
        loss = torch.nn.functional.mse_loss(prediction, noise)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        print(f"step {step:>3}/{args.steps}  loss {loss.item():.5f}")
    elapsed = time.perf_counter() - started

    network.save_weights(output, torch.float16, {"ss_network_module": "lr_weights.lora", "ss_network_args": str(kwargs), DEMO_MARK: "1"})
    saved = load_lora_file(output)
    print(f"trained {args.steps} step{'' if args.steps == 1 else 's'} in {elapsed:.1f}s (random data: the loss is noise)")
    print(f"wrote {output} ({len(saved)} tensors, fp16)")
    print(f"next: lr-weights inspect {output}")
    return 0


def _written_by_the_demo(path: str) -> bool:
    from lr_weights.files.io import read_metadata

    try:
        return read_metadata(path).get(DEMO_MARK) == "1"
    except Exception:  # not a safetensors file at all: not the demo's
        return False
