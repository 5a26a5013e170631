"""`lr-weights analyze` speed: an SD1.5-width U-Net (or SDXL-width) with a LoRA on every block.

    python benchmarks/bench_analyze.py                                  # CPU-sized: latent 16, 4 samples
    python benchmarks/bench_analyze.py --latent 64 --samples 16         # the issue's SD1.5 figure (512 px)
    python benchmarks/bench_analyze.py --model sdxl --latent 128 --samples 16 --conv --device cuda --dtype bf16

The models are lr_weights.models.tiny (SD1.5 widths: 860M parameters) and tiny_sdxl (SDXL widths
320/640/1280, transformer depths 0/2/10) with random weights; the LoRA is written by lr_weights.lora
with random lora_up (rank --rank; --conv adds LoCon on the resnets, so every block holds modules).
Reported: seconds to read the file, to measure (1 base pass, then per file 1 full + 2 per block),
and per forward pass of all samples. Threads: BENCH_THREADS (default 1).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from _common import machine, setup_threads, table

import torch


def build(model: str):
    from lr_weights.analysis.tiny_denoisers import tiny_sd_denoiser, tiny_sdxl_denoiser

    if model == "sdxl":
        from lr_weights.models.tiny_sdxl import SdxlConfig, build_tiny_sdxl

        config = SdxlConfig(widths=(320, 640, 1280), depths=(0, 2, 10), heads=10, text_widths=(768, 1280), groups=32)
        return tiny_sdxl_denoiser(*build_tiny_sdxl(0, config))
    from lr_weights.models.tiny import SD15_UNET, TextEncoderConfig, build_tiny_sd

    return tiny_sd_denoiser(*build_tiny_sd(0, SD15_UNET, TextEncoderConfig(width=768, layers=2, heads=12)))


def write_lora(denoiser, path: Path, rank: int, conv: bool) -> None:
    from lr_weights import lora

    encoders = list(denoiser.text_encoders) if denoiser.model == "sdxl" else denoiser.text_encoders[0]
    args = {"conv_dim": str(rank), "conv_alpha": "1"} if conv else {}
    network = lora.create_network(1.0, rank, 1, None, encoders, denoiser.net, **args)
    with torch.no_grad():
        for module in network.unet_loras:
            module.lora_up.weight.normal_(0, 0.02)
    network.save_weights(str(path), torch.float16, {})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", choices=("sd15", "sdxl"), default="sd15")
    parser.add_argument("--latent", type=int, default=16, help="latent side (pixels / 8); the issue's figure: 64 (SD1.5), 128 (SDXL)")
    parser.add_argument("--samples", type=int, default=4)
    parser.add_argument("--timesteps", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--rank", type=int, default=16)
    parser.add_argument("--conv", action="store_true", help="LoCon on the resnets too (every block holds modules)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="fp32")
    args = parser.parse_args()
    threads = setup_threads()

    from lr_weights.analysis.base_model import parse_device, parse_dtype
    from lr_weights.analysis.deltas import read_deltas
    from lr_weights.analysis.measure import MeasureSettings, measure

    device, dtype = parse_device(args.device), parse_dtype(args.dtype)
    start = time.perf_counter()
    denoiser = build(args.model)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "bench.safetensors"
        write_lora(denoiser, path, args.rank, args.conv)
        for module in (denoiser.net,) + tuple(denoiser.text_encoders):
            module.to(device, dtype)
        built = time.perf_counter() - start

        start = time.perf_counter()
        deltas = read_deltas(path, denoiser.layers, denoiser.arch, denoiser.model)
        read = time.perf_counter() - start
        settings = MeasureSettings(samples=args.samples, timesteps=args.timesteps, batch_size=args.batch_size, resolution=args.latent * 8)
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        analysis = measure(denoiser, [deltas], settings)
        if device.type == "cuda":
            torch.cuda.synchronize()
        measured = time.perf_counter() - start

        # The in-place swap alone: everything on, then off again (a file's measure does about 4 of these).
        from lr_weights.analysis.swap import MergedWeights

        rows = deltas.rows(False)
        weights = MergedWeights(denoiser.layers, deltas, rows)
        start = time.perf_counter()
        weights.set(rows)
        weights.restore()
        if device.type == "cuda":
            torch.cuda.synchronize()
        swap = time.perf_counter() - start

    effect = analysis.files[0]
    blocks = len(effect.blocks)
    passes = 1 + 1 + 2 * blocks
    parameters = sum(p.numel() for p in denoiser.net.parameters())
    print(f"lr-weights analyze benchmark: {machine()}, {threads} thread(s), {args.device} {args.dtype}")
    print(f"model: {args.model} U-Net, {parameters / 1e6:.0f}M parameters, latent {args.latent}x{args.latent} ({args.latent * 8} px)")
    print(f"LoRA: rank {args.rank}{' + LoCon' if args.conv else ''}, {len(deltas.modules)} modules in {blocks} blocks; {args.samples} samples, batch {args.batch_size}")
    print(table(
        ["step", "seconds"],
        [
            ["build model + write LoRA (not part of analyze)", f"{built:.1f}"],
            ["read LoRA (ΔW per module, checks)", f"{read:.2f}"],
            [f"measure: {passes} passes x {args.samples} samples", f"{measured:.1f}"],
            ["per pass (all samples)", f"{measured / passes:.2f}"],
            ["per sample forward", f"{measured / passes / args.samples:.3f}"],
            ["swap every block in and out once (in place)", f"{swap:.2f}"],
        ],
    ))
    print(f"total effect {effect.total:.3g}; largest share {max(b.share for b in effect.blocks):.2f} ({max(effect.blocks, key=lambda b: b.share).block})")


if __name__ == "__main__":
    main()
