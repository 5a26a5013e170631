"""`lr-weights gui`: run a Kohya GUI LoRA config (v21.7.x ... v26) with lr_weights.

Reads the JSON the GUI saves, builds network_args the way the GUI does for its LoRA type, switches
the module to lr_weights' own (Standard, Kohya LoCon -> lr_weights.lora; Kohya DyLoRA ->
lr_weights.dylora; v26's Flux1, Anima, HunyuanImage-2.1, Lumina -> lr_weights.flux / anima /
hunyuan_image / lumina; Standard or Kohya LoCon with the SD3 checkbox -> lr_weights.sd3;
the LyCORIS types LoCon, LoHa, LoKr, iA3, DyLoRA, GLoRA, Diag-OFT, BOFT and Native Fine-Tuning ->
lr_weights.lycoris, with the GUI's block fields honoured), and checks every block field with the
module's own parser before anything runs: what training would refuse is an error, what it would
warn about (a down/mid/up list of another length, padded or cut as sd-scripts does) is the same
warning here. Writes an sd-scripts TOML for
--config_file and prints the `accelerate launch` line; or, with --print-args, prints what to paste
into the GUI's "Additional parameters" box instead.
"""

from __future__ import annotations

import argparse
import os
import sys

from typing import Any, Iterable, Mapping

from lr_weights.errors import NetworkArgError
from lr_weights.cli.gui_config import additional_parameters_line, gui_to_sd_scripts, launch_command
from lr_weights.args.settings import parse_network_settings
from lr_weights.cli._util import add_subcommand, captured_logs, optional_import, print_warnings, read_json

EXAMPLES = """examples:
  lr-weights gui my_lora.json -o my_lora.toml            # writes the TOML, prints the accelerate line
  lr-weights gui my_lora.json                            # prints the TOML
  lr-weights gui my_lora.json --print-args               # for the GUI's "Additional parameters"
  lr-weights gui my_lora.json -o run.toml --sd-scripts ~/sd-scripts
"""


def register(subparsers) -> None:
    parser = add_subcommand(subparsers, "gui", "convert a Kohya GUI LoRA config to an sd-scripts TOML + command using lr_weights", __doc__, EXAMPLES)
    parser.add_argument("config", metavar="CONFIG.json", help="a config saved by the Kohya GUI (LoRA tab)")
    parser.add_argument("-o", "--output", metavar="OUT.toml", help="write the TOML here (atomically) and print the launch command")
    parser.add_argument("--print-args", action="store_true", help="print only the line for the GUI's Additional parameters box")
    parser.add_argument("--sd-scripts", default="", metavar="DIR", help="sd-scripts folder, to put the training script's path in the command")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing OUT.toml")
    parser.set_defaults(run=run)


def validate(converted, source: str) -> list:
    """Run the module's parser on the converted args; returns its warnings, raises on errors."""
    args = dict(converted.network_args)
    if converted.network_module == "lr_weights.lycoris":  # the LyCORIS args' values as lr_weights.lycoris checks them
        from lr_weights.args.lycoris_args import check_lycoris_values
        from lr_weights.cli.gui_lycoris import block_args_only

        check_lycoris_values(args)
        args = block_args_only(args)
    if converted.arch.kind == "dit":  # the family's own parser (lr_weights.flux / anima / hunyuan_image)
        from lr_weights.args.dit_settings import parse_dit_settings

        with captured_logs() as warnings:
            parse_dit_settings(converted.arch, converted.table.get("network_dim"), converted.table.get("network_alpha"), args)
        return [f"{source}: {w}" for w in warnings]
    with captured_logs() as warnings:
        settings = parse_network_settings(converted.arch, converted.table.get("network_dim"), converted.table.get("network_alpha"), args)
        if converted.network_module.endswith("dylora"):
            from lr_weights.args.settings import check_dylora_dims, parse_unit

            check_dylora_dims(settings, parse_unit(args))
    return [f"{source}: {w}" for w in warnings]


def dumps(table: Mapping[str, Any], header: Iterable[str]) -> str:
    """The flat sd-scripts config as TOML (written by the `toml` package sd-scripts reads it with)."""
    toml = optional_import("toml", "toml", "writing the sd-scripts TOML")
    comments = "".join(("# " + line).rstrip() + "\n" for line in header)
    return comments + toml.dumps(dict(table))


def check_destinations(args: argparse.Namespace) -> None:
    """Refuse a bad -o or --sd-scripts before reading the config."""
    from lr_weights.files.io import check_output_path

    if args.sd_scripts and not os.path.isdir(os.path.expanduser(args.sd_scripts)):
        raise NetworkArgError("--sd-scripts", args.sd_scripts, "the folder of an sd-scripts checkout (it does not exist or is not a folder)")
    if args.output:
        check_output_path(args.output, "-o")
        if os.path.exists(args.output) and not args.overwrite:
            raise FileExistsError(f"{args.output} exists; pass --overwrite to replace it")
        if os.path.abspath(args.output) == os.path.abspath(args.config):
            raise ValueError(f"-o {args.output} is the input config; choose another name")


def run(args: argparse.Namespace) -> int:
    from lr_weights.files.io import atomic_write_bytes

    check_destinations(args)
    source = args.config
    converted = gui_to_sd_scripts(read_json(source), source, args.sd_scripts)
    warnings = validate(converted, source)
    notes = [] if args.print_args else [f"{source}: {n}" for n in converted.notes]
    print_warnings("gui", warnings + notes)
    if args.print_args:
        print(additional_parameters_line(converted))
        return 0
    header = [
        f"sd-scripts --config_file written by lr-weights gui from {os.path.basename(source)}",
        f"LoRA_type {converted.lora_type} -> {converted.network_module} ({converted.arch.name.upper()}, {converted.script})",
    ]
    if args.output:
        header.append("run: " + launch_command(converted, args.output))
        atomic_write_bytes(args.output, dumps(converted.table, header).encode("utf-8"))
        print(f"wrote {args.output}", file=sys.stderr)
        print(launch_command(converted, args.output))
    else:
        header.append("run: " + launch_command(converted, "THIS_FILE.toml"))
        sys.stdout.write(dumps(converted.table, header))
    return 0
