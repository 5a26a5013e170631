"""`lr-weights analyze`: which blocks matter — each block's effect on the denoiser's output.

No images are generated. Over samples of (random latent of the model's shape, a timestep spread
over the schedule, the empty prompt or --prompt texts), with f the model's prediction:
  total     E‖f(W+ΔW) − f(W)‖² / E‖f(W)‖²      what the whole LoRA changes
  share     e_b / Σe, e_b = E‖f(W+ΔW) − f(W+ΔW−ΔW_b)‖²   what is lost without block b
  alone     E‖f(W+ΔW_b) − f(W)‖² / E‖f(W)‖²   block b on its own (share vs alone: interaction)
The same samples (--seed) serve every row and every file, so several files side by side answer
"did block LR change what was learned". --suggest turns the blocks under a cut-off into an LBW
vector and into *_lr_weight network_args for the next run. docs/analyze.md explains the measure.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from lr_weights.cli._util import add_subcommand, parse_size, progress, save_bar_chart

EXAMPLES = """examples:
  lr-weights analyze my_lora.safetensors --model v1-5-pruned-emaonly.safetensors
  lr-weights analyze v188.safetensors v189.safetensors --model sd_xl_base_1.0.safetensors --device cuda --dtype bf16
  lr-weights analyze my_lora.safetensors --model ./sdxl-diffusers --prompt "a photo of sks dog" --suggest 0.02
  lr-weights analyze flux_lora.safetensors --model flux1-dev.safetensors --device cuda --dtype bf16 --resolution 512 --json
  lr-weights analyze flux_lora.safetensors --model flux1-dev.safetensors --clip-l clip_l.safetensors --t5xxl t5xxl_fp16.safetensors --tokenizer-dir ./tokenizers --prompt "a photo of sks dog" --device cuda --dtype bf16
"""


def register(subparsers) -> None:
    parser = add_subcommand(subparsers, "analyze", "measure each block's effect on the model's output (no images)", __doc__, EXAMPLES)
    parser.add_argument("files", nargs="+", metavar="LORA.safetensors", help="one or more LoRA / LoCon / DyLoRA / FLUX / LyCORIS files")
    parser.add_argument("--model", required=True, metavar="BASE", help="the base model: a diffusers folder or a single-file SD1/SD2/SDXL checkpoint; FLUX.1: the flow model file")
    parser.add_argument("--prompt", action="append", default=[], metavar="TEXT", help="conditioning text (repeatable; default: the empty prompt); text encoders get their own rows")
    parser.add_argument("--clip-l", default=None, metavar="FILE", help="FLUX.1: CLIP-L text encoder file (sd-scripts' --clip_l); needed with --prompt")
    parser.add_argument("--t5xxl", default=None, metavar="FILE", help="FLUX.1: T5-XXL text encoder file (sd-scripts' --t5xxl); needed with --prompt")
    parser.add_argument("--t5xxl-max-token-length", default=None, metavar="N", help="FLUX.1: T5 tokens, as trained with sd-scripts' --t5xxl_max_token_length (default: dev 512, schnell 256)")
    parser.add_argument("--tokenizer-dir", default=None, metavar="DIR", help="FLUX.1: folder with openai_clip-vit-large-patch14/ and google_t5-v1_1-xxl/ (sd-scripts' --tokenizer_cache_dir; default: the HF cache, offline)")
    parser.add_argument("--samples", default="16", metavar="N", help="random latents (default 16)")
    parser.add_argument("--timesteps", default="8", metavar="T", help="timesteps spread evenly over the schedule, sample i takes the (i mod T)-th (default 8)")
    parser.add_argument("--seed", default="0", help="seed of the latents (default 0)")
    parser.add_argument("--resolution", default=None, metavar="PIXELS", help="image side in pixels (default: SD1 512, SD2 768, SDXL/FLUX 1024)")
    parser.add_argument(
        "--batch-size",
        default="auto",
        metavar="B",
        help="batch rows per forward, a row being one sample under one configuration (with --block-batching several configurations share a forward); "
        "default auto: what fits in 80%% of the free GPU memory (at most 64), 4 on CPU; lower it when memory runs out",
    )
    parser.add_argument(
        "--block-batching",
        action="store_true",
        help="several configurations (blocks ablated, blocks alone) per forward, ΔW added beside the layers per batch row; "
        "faster when one configuration's samples leave the device idle (few samples, small models), slower when they fill it",
    )
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default cpu)")
    parser.add_argument("--dtype", default="fp32", help="fp32, bf16 or fp16 (default fp32)")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    parser.add_argument("--plot", metavar="FILE.png", help="bar chart of the shares per block, LBW order (needs matplotlib)")
    parser.add_argument("--plot-size", default="1000x400", metavar="WxH", help="PNG size in pixels (default 1000x400)")
    parser.add_argument("--suggest", nargs="?", const="0.02", default=None, metavar="CUTOFF", help="drop blocks whose share is under CUTOFF (default 0.02): LBW vector and network_args")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.set_defaults(run=run)


def _percent(value: float) -> str:
    return f"{value * 100:.2f}%"


def format_table(analysis, labels) -> str:
    """One row per block, for each file: share, ablation, alone (both / E‖f(W)‖²) and ‖ΔW‖."""
    files = analysis.files
    lines = [f"model: {analysis.model.upper()}, {analysis.settings.samples} samples at {analysis.resolution}px, {analysis.settings.timesteps} timesteps, seed {analysis.settings.seed}"]
    for n, effect in enumerate(files, start=1):
        tag = f"[{n}] " if len(files) > 1 else ""
        lines.append(f"{tag}{effect.path} ({effect.kind}, {effect.model.upper()}): total effect {_percent(effect.total)} of E‖f(W)‖²")
    header = ["block"]
    for n in range(1, len(files) + 1):
        tag = f"[{n}] " if len(files) > 1 else ""
        header += [f"{tag}share", "ablation", "alone", "‖ΔW‖"]
    table = [header]
    for label in labels:
        row = [label]
        for effect in files:
            block = next((b for b in effect.blocks if b.block == label), None)
            row += ["-"] * 4 if block is None else [_percent(block.share), f"{block.ablation:.3g}", f"{block.alone:.3g}", f"{block.norm:.4g}"]
        table.append(row)
    widths = [max(len(line[i]) for line in table) for i in range(len(header))]
    lines.append("")
    for line in table:
        lines.append("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(line, widths))).rstrip())
    lines.append("share: e_b / Σe with e_b = E‖f(W+ΔW) − f(W+ΔW−ΔW_b)‖²; ablation = e_b and alone = E‖f(W+ΔW_b) − f(W)‖², both / E‖f(W)‖²")
    for effect in files:
        lines += [f"note ({os.path.basename(effect.path)}): {note}" for note in effect.notes]
    return "\n".join(lines)


def row_labels(analysis) -> list:
    """Every file's rows, text encoders first, then blocks in the architecture's (LBW) order."""
    seen = {}
    for effect in analysis.files:
        for block in effect.blocks:
            seen.setdefault(block.block, -1 if block.index is None else block.index)
    return sorted(seen, key=lambda label: (seen[label], label))


def document(analysis, suggestions) -> dict:
    from dataclasses import asdict

    return {
        "model": analysis.model,
        "settings": {**asdict(analysis.settings), "prompts": list(analysis.settings.prompts), "resolution": analysis.resolution},
        "base_power": analysis.base_power,
        "rows_per_forward": analysis.rows_per_forward,
        "files": [
            {
                "file": effect.path,
                "arch": effect.model,
                "kind": effect.kind,
                "total_effect": effect.total,
                "blocks": [asdict(block) for block in effect.blocks],
                "notes": list(effect.notes),
                **({"suggestion": asdict(suggestions[i])} if suggestions else {}),
            }
            for i, effect in enumerate(analysis.files)
        ],
    }


def run(args: argparse.Namespace) -> int:
    from lr_weights.analysis.base_model import load_denoiser, model_of_path, parse_device, parse_dtype
    from lr_weights.analysis.deltas import check_file, read_deltas
    from lr_weights.analysis.flux_text import parse_flux_text_encoders
    from lr_weights.analysis.measure import check_settings, measure, parse_settings
    from lr_weights.analysis.suggest import format_suggestion, parse_cutoff, suggest

    # Everything that can be refused is refused before the model is loaded.
    settings = parse_settings(args.samples, args.timesteps, args.seed, args.resolution, args.batch_size, args.prompt, args.block_batching)
    device, dtype = parse_device(args.device), parse_dtype(args.dtype)
    cutoff = parse_cutoff(args.suggest) if args.suggest is not None else None
    size = parse_size(args.plot_size) if args.plot else None
    if args.plot:
        from lr_weights.files.io import check_output_path

        check_output_path(args.plot, "--plot")
    model = model_of_path(args.model)
    for path in args.files:
        if not os.path.isfile(path):
            raise FileNotFoundError(f"LoRA file not found: {path}")
        check_file(path, model, args.model)
    flux_text = parse_flux_text_encoders(model, settings.prompts, args.clip_l, args.t5xxl, args.tokenizer_dir, args.model, args.t5xxl_max_token_length)
    denoiser = load_denoiser(args.model, device, dtype, model, flux_text)
    check_settings(denoiser, settings, args.model)
    files = [read_deltas(path, denoiser.layers, denoiser.arch, denoiser.model, args.model) for path in args.files]
    analysis = measure(denoiser, files, settings, None if args.no_progress else _passes, args.model)

    suggestions = [suggest(effect, denoiser.arch, cutoff) for effect in analysis.files] if cutoff is not None else []
    labels = row_labels(analysis)
    if args.json:
        print(json.dumps(document(analysis, suggestions), indent=1))
    else:
        print(format_table(analysis, labels))
        for effect, suggestion in zip(analysis.files, suggestions):
            print("")
            print(format_suggestion(suggestion, effect.path))
    if args.plot:
        series = [(os.path.basename(effect.path), [next((b.share for b in effect.blocks if b.block == label), 0.0) for label in labels]) for effect in analysis.files]
        # With --suggest and one file, blocks under the cut-off are drawn as dropped (a visible stub).
        kinds = ["train" if share >= cutoff else "pruned" for share in series[0][1]] if suggestions and len(series) == 1 else None
        title = f"{analysis.model.upper()}: each block's share of the LoRA's effect" + (f" (cut-off {cutoff:g})" if kinds else "")
        save_bar_chart(args.plot, labels, series, title, "share of Σ ablation effect", size, xlabel="block (LBW order)", kinds=kinds)
        print(f"wrote {args.plot}", file=sys.stderr)
    return 0


def _passes(iterable, total, description):
    return progress(iterable, total, description, unit="pass")
