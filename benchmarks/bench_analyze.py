"""`lr-weights analyze` speed: one configuration per forward with merged weights (the default) against
several blocks' configurations per forward (`--block-batching`), timed in the same process.

    python benchmarks/bench_analyze.py --quick                          # CPU check, seconds: tiny widths
    python benchmarks/bench_analyze.py --model sdxl --latent 128 --samples 16 --conv --device cuda --dtype bf16
        # the issue's SDXL goal: SDXL widths, 1024 px, LoRA + LoCon on 20 blocks, 16 samples
    python benchmarks/bench_analyze.py --model sd15 --latent 64 --samples 16 --prompt "a photo" --device cuda --dtype bf16
        # SD1.5 widths, 512 px, 16 U-Net blocks + the text encoder's row (17 rows), 16 samples

Needs torch and lr_weights only (no diffusers, no download): the models are lr_weights.models.tiny
(SD1.5 widths 320/640/1280, 860M parameters) and tiny_sdxl (SDXL widths 320/640/1280, transformer
depths 0/2/10) with random weights, built directly on --device; their text encoders are small
stand-ins (2 layers). The LoRA is written by lr_weights.lora with random lora_up (rank --rank;
--conv adds LoCon on the resnets, so every block holds modules; --prompt measures the text encoder's
row too). Reported: seconds of each path's measure (after one untimed warm-up run of each path;
--rounds N: the median of N, the order alternating), their ratio, rows per forward, and the largest difference
between the two paths' shares. Threads: BENCH_THREADS.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import tempfile
import time
from pathlib import Path

from _common import machine, setup_threads, table

import torch


def build(model: str, quick: bool):
    from lr_weights.analysis.tiny_denoisers import tiny_sd_denoiser, tiny_sdxl_denoiser

    if model == "sdxl":
        from lr_weights.models.tiny_sdxl import SdxlConfig, build_tiny_sdxl

        config = SdxlConfig() if quick else SdxlConfig(widths=(320, 640, 1280), depths=(0, 2, 10), heads=10, text_widths=(768, 1280), groups=32)
        return tiny_sdxl_denoiser(*build_tiny_sdxl(0, config))
    from lr_weights.models.tiny import SD15_UNET, TextEncoderConfig, UNetConfig, build_tiny_sd

    if quick:
        return tiny_sd_denoiser(*build_tiny_sd(0, UNetConfig()))
    return tiny_sd_denoiser(*build_tiny_sd(0, SD15_UNET, TextEncoderConfig(width=768, layers=2, heads=12)))


def write_lora(denoiser, path: Path, rank: int, conv: bool) -> None:
    from lr_weights import lora

    encoders = list(denoiser.text_encoders) if denoiser.model == "sdxl" else denoiser.text_encoders[0]
    args = {"conv_dim": str(rank), "conv_alpha": "1"} if conv else {}
    network = lora.create_network(1.0, rank, 1, None, encoders, denoiser.net, **args)
    torch.manual_seed(0)  # the same LoRA every run
    with torch.no_grad():
        for module in network.unet_loras + network.text_encoder_loras:
            module.lora_up.weight.normal_(0, 0.02)
    network.save_weights(str(path), torch.float16, {})


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed_measure(denoiser, deltas, settings, device):
    from lr_weights.analysis.measure import measure

    synchronize(device)
    start = time.perf_counter()
    analysis = measure(denoiser, [deltas], settings)
    synchronize(device)
    return analysis, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", choices=("sd15", "sdxl"), default="sd15")
    parser.add_argument("--quick", action="store_true", help="the tiny widths (16..64), latent 8, 2 samples: a CPU check in seconds")
    parser.add_argument("--latent", type=int, default=None, help="latent side (pixels / 8); SD1.5 at 512 px: 64, SDXL at 1024 px: 128 (default 16; --quick 8)")
    parser.add_argument("--samples", type=int, default=None, help="default 4; --quick 2")
    parser.add_argument("--timesteps", type=int, default=4)
    parser.add_argument("--batch-size", default="auto", help="rows per forward, as analyze's flag (default auto)")
    parser.add_argument("--rank", type=int, default=16)
    parser.add_argument("--conv", action="store_true", help="LoCon on the resnets too (every block holds modules)")
    parser.add_argument("--prompt", action="append", default=[], help="measure the text encoders' rows too, with this prompt")
    parser.add_argument("--paths", choices=("both", "batched", "merged"), default="both", help="which paths to time (default both, for the ratio)")
    parser.add_argument("--rounds", type=int, default=1, help="time each path this many times, the order alternating; the median is reported (default 1)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="fp32")
    args = parser.parse_args()
    setup_threads()
    latent = args.latent or (8 if args.quick else 16)
    samples = args.samples or (2 if args.quick else 4)

    from lr_weights.analysis.base_model import parse_device, parse_dtype
    from lr_weights.analysis.deltas import read_deltas
    from lr_weights.analysis.measure import parse_settings

    device, dtype = parse_device(args.device), parse_dtype(args.dtype)
    start = time.perf_counter()
    with torch.device(device):  # built where it runs: no CPU copy of a 2.6B-parameter model
        denoiser = build(args.model, args.quick)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "bench.safetensors"
        write_lora(denoiser, path, args.rank, args.conv)
        for module in (denoiser.net,) + tuple(denoiser.text_encoders):
            module.to(device, dtype)
        deltas = read_deltas(path, denoiser.layers, denoiser.arch, denoiser.model)
    synchronize(device)
    built = time.perf_counter() - start

    settings = parse_settings(samples, args.timesteps, 0, latent * 8, args.batch_size, args.prompt)
    if settings.batch_size is None:  # auto: chosen once, so that no probe forward is timed
        from lr_weights.analysis.forwards import auto_rows
        from lr_weights.analysis.measure import draw_samples

        probe = draw_samples(denoiser, settings, latent * 8)
        with torch.no_grad():
            cond = denoiser.encode([""])
        settings = dataclasses.replace(settings, batch_size=auto_rows(denoiser, probe.latents, probe.timesteps, {k: v[probe.prompt_index] for k, v in cond.items()}))
    paths = [(name, batch_blocks) for name, batch_blocks in (("batched", True), ("merged", False)) if args.paths in ("both", name)]
    times = {name: [] for name, _ in paths}
    analyses = {}
    # Round 0 is a warm-up, not timed: each path's batch shapes meet their kernels' first-call costs
    # (plan choice, allocator growth) there, not in the figures.
    for round_ in range(args.rounds + 1):
        for name, batch_blocks in paths[round_ % 2 :] + paths[: round_ % 2]:  # order alternates each round
            analyses[name], seconds = timed_measure(denoiser, deltas, dataclasses.replace(settings, batch_blocks=batch_blocks), device)
            if round_:
                times[name].append(seconds)
    results = {name: (analyses[name], statistics.median(times[name])) for name, _ in paths}

    effect = next(iter(results.values()))[0].files[0]
    rows = len(effect.blocks)
    configurations = 2 + 2 * rows
    parameters = sum(p.numel() for p in denoiser.net.parameters())
    print(f"lr-weights analyze benchmark: {machine()}; {device} {args.dtype}")
    if device.type == "cuda":
        print(f"GPU: {torch.cuda.get_device_name(device)}, peak memory {torch.cuda.max_memory_allocated(device) / 2**30:.1f} GiB")
    print(f"model: {args.model} U-Net{' (tiny widths)' if args.quick else ''}, {parameters / 1e6:.0f}M parameters, latent {latent}x{latent} ({latent * 8} px)")
    print(f"LoRA: rank {args.rank}{' + LoCon' if args.conv else ''}, {len(deltas.modules)} modules, {rows} rows ({', '.join(b.block for b in effect.blocks)})")
    print(f"{samples} samples x {configurations} configurations (base, full, {rows} ablated, {rows} alone) = {samples * configurations} sample forwards")
    lines = [["build model + write and read the LoRA (not part of analyze)", f"{built:.1f}", ""]]
    for name, (analysis, seconds) in results.items():
        what = "several configurations per forward" if name == "batched" else "one configuration per forward, merged in place"
        what += f" ({len(times[name])} rounds, median)" if len(times[name]) > 1 else ""
        lines.append([f"measure, {what}: {analysis.rows_per_forward} rows per forward", f"{seconds:.2f}", f"{seconds / (samples * configurations) * 1000:.1f}"])
    print(table(["step", "seconds", "ms per sample forward"], lines))
    if len(results) == 2:
        (batched, batched_s), (merged, merged_s) = results["batched"], results["merged"]
        print(f"ratio batched / merged: {batched_s / merged_s:.3f} (below 1: batching is faster)")
        difference = max(abs(a.share - b.share) for a, b in zip(batched.files[0].blocks, merged.files[0].blocks))
        print(f"largest |share difference| between the paths: {difference:.2e} ({args.dtype}: merged weights round W + ΔW to it, batched adds ΔW·x beside W·x)")
    print(f"total effect {effect.total:.3g}; largest share {max(b.share for b in effect.blocks):.2f} ({max(effect.blocks, key=lambda b: b.share).block})")


if __name__ == "__main__":
    main()
