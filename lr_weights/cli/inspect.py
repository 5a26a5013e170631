"""`lr-weights inspect`: what a LoRA file learned, block by block.

For any sd-scripts-format LoRA (ours or anyone's): the architecture, dims and alphas per block,
and per block the size of the weight change ΔW = up·down·alpha/dim — its Frobenius norm summed
over the block's modules, the norm per module (root mean square), and that per-module norm
relative to the whole file's, so blocks with many modules do not look bigger just for that. Also
the training metadata (ss_* keys) and, for files trained with lr_weights, the training block table.
Tensors are streamed one module at a time.
"""

from __future__ import annotations

import argparse
import json
import sys

from lr_weights.network.table import BlockRow, format_block_table
from lr_weights.cli._util import MODEL_CHOICES, add_subcommand, parse_size, progress, save_bar_chart, single_thread

EXAMPLES = """examples:
  lr-weights inspect my_lora.safetensors
  lr-weights inspect my_lora.safetensors --json > my_lora.json
  lr-weights inspect my_lora.safetensors --plot blocks.png
"""


def register(subparsers) -> None:
    parser = add_subcommand(subparsers, "inspect", "per-block dims, alphas and weight-change norms of a LoRA file, and its training metadata", __doc__, EXAMPLES)
    parser.add_argument("file", metavar="LORA.safetensors")
    parser.add_argument("--arch", choices=MODEL_CHOICES, help="override the architecture read from the key names")
    parser.add_argument("--json", action="store_true", help="print everything as JSON")
    parser.add_argument("--plot", metavar="FILE.png", help="bar chart of the per-module norm per block (needs matplotlib)")
    parser.add_argument("--plot-size", default="1000x400", metavar="WxH", help="PNG size in pixels (default 1000x400)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.set_defaults(run=run)


def _pairs(values) -> str:
    return ", ".join(f"{v:g}" if isinstance(v, float) else str(v) for v in values)


def format_summary(summary, rows) -> str:
    lines = [
        f"file: {summary.path} ({summary.file_bytes / 2**20:.1f} MiB, {len(summary.modules)} modules, {'/'.join(summary.dtypes)})",
        f"architecture: {summary.model} (from the module names)",
        "",
    ]
    header = ("block", "idx", "modules", "dims", "alphas", "norm", "per module", "relative")
    table = [header]
    for row in rows:
        table.append(
            (
                row["block"],
                "" if row["index"] is None else str(row["index"]),
                str(row["modules"]),
                _pairs(row["dims"]),
                _pairs(row["alphas"]),
                f"{row['norm']:.4g}",
                f"{row['norm_per_module']:.4g}",
                f"{row['relative']:.3f}",
            )
        )
    widths = [max(len(line[i]) for line in table) for i in range(len(header))]
    for line in table:
        lines.append("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(line, widths))).rstrip())
    lines.append("norm: ‖ΔW‖ over the block's modules; per module: its root mean square; relative: per module / the file's")
    if summary.ignored_keys:
        lines.append(f"ignored: {len(summary.ignored_keys)} tensors that are not LoRA tensors, e.g. {summary.ignored_keys[0]}")
    training = {k: v for k, v in sorted(summary.metadata.items()) if k.startswith("ss_")}
    lines.append("")
    lines.append("training metadata:" + ("" if training else " none (no ss_* keys)"))
    for key, value in training.items():
        value = value if len(value) <= 160 else value[:157] + "..."
        lines.append(f"  {key}: {value}")
    for key in ("lr_weights_version", "lr_weights_baked_lbw", "lr_weights_baked_from"):
        if key in summary.metadata:
            lines.append(f"  {key}: {summary.metadata[key]}")
    blocks = summary.training_blocks()
    if blocks:
        lines.append("")
        lines.append("block table at training (lr_weights_blocks):")
        try:
            lines.append(format_block_table([BlockRow(**row) for row in blocks]))
        except TypeError:
            lines.append("  (unreadable: written by another lr_weights version)")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    from lr_weights.files.lora_file import read_summary
    from lr_weights.cli.lycoris_files import holds_lycoris_modules, run_inspect

    single_thread()
    if holds_lycoris_modules(args.file):  # LoKr, LoHa, ...: rebuilt with lycoris-lora
        return run_inspect(args)

    size = parse_size(args.plot_size) if args.plot else None
    if args.plot:
        from lr_weights.files.io import check_output_path

        check_output_path(args.plot, "--plot")
    summary = read_summary(args.file, None if args.no_progress else progress, args.arch)
    rows = summary.block_rows()
    if args.json:
        document = {
            "file": summary.path,
            "file_bytes": summary.file_bytes,
            "arch": summary.model,
            "dtypes": summary.dtypes,
            "blocks": rows,
            "modules": [m.__dict__ for m in summary.modules],
            "metadata": summary.metadata,
            "training_blocks": summary.training_blocks(),
            "ignored_keys": summary.ignored_keys,
        }
        print(json.dumps(document, indent=1))
    else:
        print(format_summary(summary, rows))
    if args.plot:
        save_bar_chart(
            args.plot,
            [r["block"] for r in rows],
            [("ΔW norm per module", [r["norm_per_module"] for r in rows])],
            f"{summary.model.upper()} LoRA: weight change per block",
            "‖ΔW‖ per module (RMS)",
            size,
            xlabel="block (TE: text encoders)",
        )
        print(f"wrote {args.plot}", file=sys.stderr)
    return 0
