"""`inspect` and `bake` for LyCORIS files (LoKr, LoHa, LoCon with tucker/DoRA, IA3, full, ...).

A file holding tensors only LyCORIS writes is routed here by `inspect` and `bake`; a plain
sd-scripts LoRA (lora_down / lora_up / alpha) stays on their own path. The work is done by
lr_weights.files.lycoris_file with lycoris-lora's own module code.
"""

from __future__ import annotations

import argparse
import json
import sys

from lr_weights.cli._util import captured_logs, parse_size, print_warnings, save_bar_chart


def holds_lycoris_modules(path: str) -> bool:
    """True for a .safetensors file whose key names show LyCORIS-only tensors (names only are read)."""
    from lr_weights.files.lycoris_file import is_lycoris_file

    if not str(path).lower().endswith(".safetensors"):
        return False
    try:
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as handle:
            return is_lycoris_file(list(handle.keys()))
    except Exception:  # unreadable: the LoRA path reports it with its own message
        return False


def run_inspect(args: argparse.Namespace) -> int:
    from lr_weights.files.lycoris_file import read_lycoris_summary

    size = None
    if getattr(args, "plot", None):
        from lr_weights.files.io import check_output_path

        size = parse_size(args.plot_size)
        check_output_path(args.plot, "--plot")
    with captured_logs() as warnings:
        summary = read_lycoris_summary(args.file, args.arch)
    rows = summary.block_rows()
    if args.json:
        document = {
            "file": summary.path,
            "file_bytes": summary.file_bytes,
            "arch": summary.model,
            "algos": summary.algos,
            "blocks": rows,
            "modules": [m.__dict__ for m in summary.modules],
            "metadata": summary.metadata,
        }
        print(json.dumps(document, indent=1))
    else:
        print(f"file: {summary.path} ({summary.file_bytes / 2**20:.1f} MiB, {len(summary.modules)} LyCORIS modules: "
              + ", ".join(f"{n} {a}" for a, n in sorted(summary.algos.items())) + ")")
        print(f"architecture: {summary.model} (from the module names)")
        print("")
        header = ("block", "idx", "modules", "algos", "norm", "")
        table = [header] + [
            (r["block"], "" if r["index"] is None else str(r["index"]), str(r["modules"]), ",".join(r["algos"]), f"{r['norm']:.4g}", "" if r["exact"] else "learned tensors*")
            for r in rows
        ]
        widths = [max(len(line[i]) for line in table) for i in range(len(header))]
        for line in table:
            print("  ".join(c.ljust(w) if i in (0, 3, 5) else c.rjust(w) for i, (c, w) in enumerate(zip(line, widths))).rstrip())
        print("norm: ‖ΔW‖ over the block's modules, each rebuilt by lycoris-lora from the file")
        if not all(r["exact"] for r in rows):
            print("*: IA3, OFT, GLoRA and DoRA change W in a way that depends on the base weights; shown is ‖learned tensors‖")
        for key in ("lr_weights_version", "lr_weights_baked_lbw", "lr_weights_baked_from"):
            if key in summary.metadata:
                print(f"  {key}: {summary.metadata[key]}")
    print_warnings("inspect", warnings)
    if size is not None:
        save_bar_chart(
            args.plot,
            [r["block"] for r in rows],
            [("ΔW norm", [r["norm"] for r in rows])],
            f"{summary.model.upper()} LyCORIS ({', '.join(sorted(summary.algos))}): weight change per block",
            "‖ΔW‖ over the block's modules",
            size,
            xlabel="block (TE: text encoders)",
        )
        print(f"wrote {args.plot}", file=sys.stderr)
    return 0


def run_bake(args: argparse.Namespace, output: str) -> int:
    from lr_weights.files.lycoris_file import bake_lycoris

    with captured_logs() as warnings:
        result = bake_lycoris(args.file, output, args.lbw, args.arch)
    print_warnings("bake", warnings)
    applied = ", ".join(f"{label}={weight:g}" for label, weight in result.scaled.items())
    factors = ", ".join(f"{n} x {suffix}" for suffix, n in sorted(result.factors.items()))
    print(f"wrote {output}: {result.modules} LyCORIS modules, every key and shape kept; scaled {factors or 'nothing'}")
    print(f"weights applied: {applied}")
    return 0
