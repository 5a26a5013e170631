"""`lr-weights bake`: apply LBW block weights to a LoRA file once, for UIs without LBW.

Each module's lora_up is multiplied by its block's weight (BASE for the text encoder), exactly what
sd-webui-lora-block-weight does at load time; a block with weight 0 loses its tensors. The new file
loads in any UI, keeps the metadata, and records the vector applied (`lr_weights_baked_lbw`). It is
written atomically and never replaces the input unless --in-place.
"""

from __future__ import annotations

import argparse
import os

from lr_weights.errors import NetworkArgError
from lr_weights.cli._util import MODEL_CHOICES, add_subcommand, captured_logs, print_warnings, progress, single_thread

EXAMPLES = """examples:
  lr-weights bake my_lora.safetensors --lbw OUTD -o my_lora_outd.safetensors
  lr-weights bake my_lora.safetensors --lbw 1,1,1,1,1,1,1,1,0.5,0.5,0.5,1,1,1,1,1,1 -o softer.safetensors
  lr-weights bake xl_lora.safetensors --lbw 1,0,0,0,0,1,1,1,1,1,1,1 -o xl_mid_out.safetensors
  lr-weights bake my_lora.safetensors --lbw ALL0.5 --in-place
"""


def register(subparsers) -> None:
    parser = add_subcommand(subparsers, "bake", "scale a LoRA file's blocks by LBW weights and write a new LoRA", __doc__, EXAMPLES)
    parser.add_argument("file", metavar="LORA.safetensors")
    parser.add_argument("--lbw", required=True, metavar="VECTOR|PRESET", help="LBW vector (SD 17/26, SDXL 12/20 values, BASE first; FLUX 61: CLIP, T5, IN, D00..D18, S00..S37, OUT, or 58: BASE, D.., S..) or preset")
    parser.add_argument("-o", "--output", metavar="OUT.safetensors", help="the new file")
    parser.add_argument("--in-place", action="store_true", help="replace the input file (atomically)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing OUT file")
    parser.add_argument("--arch", choices=MODEL_CHOICES, help="override the architecture read from the key names")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from lr_weights.files.io import check_output_path
    from lr_weights.files.lora_file import bake

    single_thread()

    output = args.output
    if args.in_place:
        if output is not None and os.path.abspath(output) != os.path.abspath(args.file):
            raise NetworkArgError("--in-place", output, "no -o (or -o naming the input itself)")
        output = args.file
    elif output is None:
        raise ValueError("bake writes a new file: give -o OUT.safetensors (or --in-place to replace the input)")
    elif os.path.exists(output) and os.path.samefile(output, args.file):
        raise ValueError(f"-o {output} is the input file; pass --in-place to replace it")
    elif os.path.exists(output) and not args.overwrite:
        raise FileExistsError(f"{output} exists; pass --overwrite to replace it")
    if not str(output).lower().endswith(".safetensors"):
        raise NetworkArgError("-o", output, "a .safetensors file name")
    check_output_path(output, "-o")
    from lr_weights.cli.lycoris_files import holds_lycoris_modules, run_bake

    if holds_lycoris_modules(args.file):  # LoKr, LoHa, ...: one factor per module, every key kept
        return run_bake(args, output)
    with captured_logs() as warnings:
        result = bake(args.file, output, args.lbw, args.arch, None if args.no_progress else progress)
    print_warnings("bake", warnings)
    applied = ", ".join(f"{label}={weight:g}" for label, weight in result.scaled.items())
    print(f"wrote {output}: {result.kept} modules kept, {result.dropped} dropped")
    print(f"weights applied: {applied}")
    return 0

