"""`lr-weights show`: expand block LR weight specs and see which block trains at what LR.

Specs are the values you would pass as network_args: `down=sine+.25 mid=1 up=cosine+.25` (or the
full names down_lr_weight=..., block_lr_zero_threshold=..., conv_dim=...), or an LBW vector or
preset (`lbw=OUTD`, or just `OUTD` / `1,0,0,...`). A bare weight spec (`sine+.25`, `0.5`,
`1,1,0.5,...`) is one down_lr_weight / up_lr_weight value: the table and JSON show the 12 (SDXL 9)
numbers it expands to, exactly as sd-scripts expands it; --format lbw / sd-scripts and --plot show
it used for both down and up. The expansion and the pruning rule are the module's own, and which
blocks hold modules comes from sd-scripts' own module tree (as `plan` builds it), so what you see
is what training does.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Dict, List, Optional, Tuple

from lr_weights.archs.blocks import Architecture
from lr_weights.errors import NetworkArgError, TrainsNothingError
from lr_weights.args.keys import near_miss
from lr_weights.args.lbw import LBW_PRESETS, block_weights_to_network_args, lbw_lengths, lbw_vector
from lr_weights.args.scalars import parse_float, parse_learning_rate
from lr_weights.args.settings import block_weights_of
from lr_weights.args.weights import apply_threshold, fit_length, parse_down_up_spec
from lr_weights.cli._util import ARCH_CHOICES, add_subcommand, architecture, captured_logs, parse_size, print_warnings, save_bar_chart

EXAMPLES = """examples:
  lr-weights show sine+.25                                  # the 12 values sd-scripts makes of it
  lr-weights show down=sine+.25 mid=1 up=cosine+.25 --unet-lr 1e-4
  lr-weights show down=sine up=cosine conv_dim=4            # LoCon: conv-only blocks train too
  lr-weights show down=linear up=reverse_linear threshold=0.3
  lr-weights show OUTD --format sd-scripts
  lr-weights show lbw=1,0,0,0,0,0,0,0,1,1,1,0,0,0,0,0,0 --format json
  lr-weights show --arch sdxl down=0,0,0,1,1,1,1,1,1 mid=1 up=cosine --format lbw
  lr-weights show down=sine up=cosine --plot weights.png
  lr-weights show --arch flux double=sine+.25 single=cosine threshold=0.3 --unet-lr 1e-4 --plot flux.png
  lr-weights show --arch flux FLUXALL --format sd-scripts
  lr-weights show --arch sd3-large joint=sine threshold=0.3 --unet-lr 1e-4
  lr-weights show --arch lumina layer=linear+.5 refiner=1,1,.5,.5
"""

_KEYS = {
    "down": "down_lr_weight",
    "down_lr_weight": "down_lr_weight",
    "mid": "mid_lr_weight",
    "mid_lr_weight": "mid_lr_weight",
    "up": "up_lr_weight",
    "up_lr_weight": "up_lr_weight",
    "threshold": "block_lr_zero_threshold",
    "block_lr_zero_threshold": "block_lr_zero_threshold",
    "lbw": "lbw_weights",
    "lbw_weights": "lbw_weights",
    "conv_dim": "conv_dim",
    "double": "double_lr_weight",
    "double_lr_weight": "double_lr_weight",
    "single": "single_lr_weight",
    "single_lr_weight": "single_lr_weight",
    "block": "block_lr_weight",
    "block_lr_weight": "block_lr_weight",
    "llm_adapter": "llm_adapter_lr_weight",
    "llm_adapter_lr_weight": "llm_adapter_lr_weight",
    # Anima's llm_adapter blocks get modules only with this upstream arg, as in training.
    "train_llm_adapter": "train_llm_adapter",
    "joint": "joint_lr_weight",
    "joint_lr_weight": "joint_lr_weight",
    "layer": "layer_lr_weight",
    "layer_lr_weight": "layer_lr_weight",
    "refiner": "refiner_lr_weight",
    "refiner_lr_weight": "refiner_lr_weight",
}
BARE = "bare spec"  # a down/up value given without a key


def register(subparsers) -> None:
    parser = add_subcommand(subparsers, "show", "expand down/mid/up or LBW specs into per-block weights and LRs", __doc__, EXAMPLES)
    parser.add_argument(
        "specs", nargs="+", metavar="SPEC",
        help="KEY=VALUE (down, mid, up, threshold, lbw, conv_dim, or the network_args names), an LBW preset/vector, or a bare down/up spec such as sine+.25",
    )
    parser.add_argument("--arch", choices=ARCH_CHOICES, default="sd", help="block layout: sd (= sd1, sd2), sdxl, flux or hunyuan_image (double=, single=), sd3 / sd3-large (joint=), lumina (layer=, refiner=), anima (block=, llm_adapter=); default sd")
    parser.add_argument("--unet-lr", type=float, default=None, help="U-Net learning rate, to show each block's effective LR")
    parser.add_argument("--threshold", default=None, help="block_lr_zero_threshold (a block trains only if its weight > threshold)")
    parser.add_argument("--format", choices=("table", "lbw", "sd-scripts", "json"), default="table", help="output format (default table)")
    parser.add_argument("--lbw-length", type=int, default=None, help="with --format lbw: the vector length (SD 17/26, SDXL 12/20, FLUX 58/61; default the full one)")
    parser.add_argument("--plot", metavar="FILE.png", help="also draw the weights per block (needs matplotlib)")
    parser.add_argument("--plot-size", default="1000x400", metavar="WxH", help="PNG size in pixels (default 1000x400)")
    parser.set_defaults(run=run)


def parse_specs(specs: List[str], arch: Architecture) -> Dict[str, str]:
    given: Dict[str, str] = {}
    for spec in specs:
        if "=" in spec:
            key, value = spec.split("=", 1)
            if key.strip() not in _KEYS:
                close = near_miss(key, _KEYS)
                hint = f"did you mean {close}? " if close else ""
                raise NetworkArgError(key, value, f"a known KEY ({hint}KEY is one of {', '.join(sorted(set(_KEYS)))})")
            key = _KEYS[key.strip()]
            if key.endswith("_lr_weight") and key not in arch.lr_weight_keys or key == "conv_dim" and arch.kind == "dit":
                raise NetworkArgError(key, value, f"one of {', '.join(arch.lr_weight_keys)} for {arch.name.upper()} (see --arch)")
        elif arch.lbw.preset(spec.strip()) is not None or spec.count(",") + 1 in lbw_lengths(arch):
            key, value = "lbw_weights", spec
        elif arch.kind == "dit":
            stacks = ", ".join(f"{s.name}=..." for s in arch.stacks)
            presets = ", ".join(name for name, _ in arch.lbw.presets)
            lengths = "/".join(map(str, lbw_lengths(arch)))
            raise NetworkArgError("SPEC", spec, f"KEY=VALUE for {arch.title} ({stacks}, threshold=..., lbw=...), an LBW preset ({presets}) or a {lengths}-value vector")
        else:
            key, value = BARE, spec
            try:
                parse_down_up_spec("SPEC", spec, arch.num_down)
            except NetworkArgError as error:
                raise NetworkArgError(
                    "SPEC", spec,
                    f"KEY=VALUE (e.g. down=sine+.25, up=cosine-0.1, mid=0.5), an LBW preset/vector ({', '.join(LBW_PRESETS)}; "
                    f"{' or '.join(map(str, lbw_lengths(arch)))} values), or a bare down/up spec: {error.expected}",
                ) from None
        if key in given:
            raise NetworkArgError(key, value, f"one value (it is given twice: {given[key]!r} and {value!r})")
        given[key] = value
    if "lbw_weights" in given and any(k in given for k in arch.lr_weight_keys + (BARE,)):
        raise NetworkArgError("lbw_weights", given["lbw_weights"], f"either an LBW vector or {'/'.join(s.name for s in arch.stacks)} lists, not both")
    if BARE in given and ("down_lr_weight" in given or "up_lr_weight" in given):
        raise NetworkArgError(
            "SPEC", given[BARE], "either a bare down/up spec (used for both) or down=/up=, not both; write down=... or up=... for each"
        )
    return given


def expand_bare(arch: Architecture, spec: str, threshold: Optional[str]) -> List[float]:
    """One down/up spec as the numbers sd-scripts makes of it: preset, list or number, padded,
    and with the threshold applied (default 0, as upstream)."""
    values = fit_length("SPEC", parse_down_up_spec("SPEC", spec, arch.num_down), arch.num_down)
    limit = 0.0 if threshold is None else parse_float("block_lr_zero_threshold", str(threshold).strip())
    return apply_threshold(values, limit)


def format_bare(arch: Architecture, spec: str, values: List[float]) -> str:
    down = [arch.block_name(arch.down_start + i) for i in range(arch.num_down)]
    up = [arch.block_name(arch.up_start + i) for i in range(arch.num_down)]
    lines = [f"{spec} as a down_lr_weight / up_lr_weight value: {len(values)} weights ({arch.name.upper()})"]
    table = [("pos", "weight", "as down", "as up")] + [(str(i), f"{v:.6g}", d, u) for i, (v, d, u) in enumerate(zip(values, down, up))]
    widths = [max(len(row[i]) for row in table) for i in range(4)]
    lines += ["  ".join(cell.rjust(w) if i < 2 else cell.ljust(w) for i, (cell, w) in enumerate(zip(row, widths))).rstrip() for row in table]
    lines.append("as a list: " + ",".join(f"{v:.6g}" for v in values))
    return "\n".join(lines)


def network_args_given(given: Dict[str, str]) -> Dict[str, str]:
    """The specs as the network_args training would get: a bare spec is both down and up."""
    args = dict(given)
    if BARE in args:
        bare = args.pop(BARE)
        args["down_lr_weight"] = args["up_lr_weight"] = bare
    return args


def module_verdict(arch: Architecture, args: Dict[str, str]) -> Optional[TrainsNothingError]:
    """The module's own parser on these args: None when it would train, its error when the setting
    trains nothing; any other bad input raises, as it would in create_network."""
    try:
        with captured_logs():  # its warnings are the ones expand collects next (printed once)
            if arch.dit is not None:
                from lr_weights.args.dit_settings import parse_dit_settings

                parse_dit_settings(arch, None, None, args)
            else:
                from lr_weights.args.settings import parse_network_settings

                parse_network_settings(arch, None, None, args)
    except TrainsNothingError as error:
        return error
    return None


def expand(arch: Architecture, args: Dict[str, str]) -> Tuple[Optional[Dict[str, float]], Tuple[float, ...]]:
    """(text-encoder weights by LBW label, or None; per-block weights after the threshold), as the
    module computes them for training (a setting that trains nothing is shown, not refused)."""
    base, flat = block_weights_of(arch, args, require_training=False)
    return base, tuple([1.0] * arch.num_blocks) if flat is None else flat


def rows(
    arch: Architecture, base: Optional[Dict[str, float]], flat: Tuple[float, ...], unet_lr: Optional[float], holding: "BlocksWithModules"
) -> List[dict]:
    """One row per block; statuses as the per-block table of `plan` and of the module say them."""
    result = []
    names = {"TE": "BASE", "TE1": "CLIP", "TE3": "T5"}
    for label, weight in (base or {}).items():
        result.append({"block": names.get(label, label), "index": None, "weight": weight, "lr": None, "status": "text encoder"})
    for index, weight in enumerate(flat):
        if weight == 0:
            status = "pruned"
        elif index in holding.with_modules:
            status = "train"
        elif index in holding.conv_only:
            status = "no modules (conv only: give conv_dim)"
        else:
            status = "no modules"
        lr = None if unet_lr is None or status != "train" else unet_lr * weight
        result.append({"block": arch.block_name(index), "index": index, "weight": weight, "lr": lr, "status": status})
    return result


def format_table(table: List[dict], unet_lr: Optional[float]) -> str:
    header = ["block", "idx", "weight"] + (["unet lr"] if unet_lr is not None else []) + ["status"]
    lines = [header]
    for row in table:
        cells = [row["block"], "" if row["index"] is None else str(row["index"]), f"{row['weight']:.4g}"]
        if unet_lr is not None:
            cells.append("" if row["lr"] is None else f"{row['lr']:.4g}")
        cells.append(row["status"])
        lines.append(cells)
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    text = ["  ".join(c.ljust(w) if i in (0, len(header) - 1) else c.rjust(w) for i, (c, w) in enumerate(zip(line, widths))).rstrip() for line in lines]
    pruned = [r["block"] for r in table if r["status"] == "pruned"]
    text.append(f"pruned: {', '.join(pruned)}" if pruned else "pruned: none")
    return "\n".join(text)


class BlocksWithModules:
    """Which blocks hold adapter modules, read off sd-scripts' module tree for this layout."""

    def __init__(self, arch: Architecture, conv: bool):
        from lr_weights.network.targets import blocks_with_modules

        linear = blocks_with_modules(arch, include_conv=False)
        with_conv = blocks_with_modules(arch, include_conv=True)
        self.with_modules = with_conv if conv else linear
        self.conv_only = frozenset() if conv else with_conv - linear


def network_args_of(arch: Architecture, flat: Tuple[float, ...], given: Dict[str, str]) -> Dict[str, str]:
    network_args = block_weights_to_network_args(arch, flat)
    if "conv_dim" in given:
        network_args["conv_dim"] = given["conv_dim"]
    return network_args


def plot_blocks(path: str, arch: Architecture, table: List[dict], unet_lr: Optional[float], size) -> None:
    """Bars per block; pruned and module-less blocks hatched, and the LR itself when it is known."""
    table = [r for r in table if r["index"] is not None]
    kinds = [r["status"] if r["status"] in ("train", "pruned") else "no modules" for r in table]
    if unet_lr is None:
        values, ylabel, what = [r["weight"] for r in table], "LR weight (x unet_lr)", "LR weights"
    else:
        values, ylabel, what = [unet_lr * r["weight"] for r in table], "effective U-Net LR", f"LRs at unet_lr {unet_lr:g}"
    save_bar_chart(path, [r["block"] for r in table], [("weight", values)], f"{arch.name.upper()} block {what}", ylabel, size, xlabel="U-Net block" if arch.kind != "dit" else f"{arch.title} block", kinds=kinds)


def run(args: argparse.Namespace) -> int:
    arch = architecture(args.arch)
    given = parse_specs(args.specs, arch)
    if args.threshold is not None:
        if "block_lr_zero_threshold" in given:
            raise NetworkArgError("--threshold", args.threshold, "one threshold (threshold= is also given as a SPEC)")
        given["block_lr_zero_threshold"] = args.threshold
    unet_lr = parse_learning_rate("--unet-lr", args.unet_lr)
    size = parse_size(args.plot_size) if args.plot else None
    if args.plot:
        from lr_weights.files.io import check_output_path

        check_output_path(args.plot, "--plot")
    network_args = network_args_given(given)
    # The module's own verdict first: what it refuses (negative weights, ...) is refused here too.
    problem = module_verdict(arch, network_args)
    with captured_logs() as warnings:
        base, flat = expand(arch, network_args)
        bare = expand_bare(arch, given[BARE], given.get("block_lr_zero_threshold")) if BARE in given else None
    print_warnings("show", warnings)
    holding = BlocksWithModules(arch, conv="conv_dim" in given)
    lbw_text = lbw_vector(arch, flat, 1.0, args.lbw_length, text_encoders=base) if args.format == "lbw" else None

    table = rows(arch, base, flat, unet_lr, holding)
    if args.format == "table" and bare is not None:
        print(format_bare(arch, given[BARE], bare))
    elif args.format == "table":
        print(f"{arch.name.upper()} block weights" + (f", unet lr {unet_lr:g}" if unet_lr is not None else ""))
        print(format_table(table, unet_lr))
    elif args.format == "lbw":
        print(lbw_text)
    elif args.format == "sd-scripts":
        print("--network_args " + " ".join(f'"{k}={v}"' for k, v in network_args_of(arch, flat, given).items()))
    else:
        document = {
            "arch": arch.name,
            "unet_lr": unet_lr,
            "base": None if base is None else next(iter(base.values())),
            "text_encoders": base,
            "blocks": [r for r in table if r["index"] is not None],
            "network_args": network_args_of(arch, flat, given),
            "trains": problem is None,
        }
        if bare is not None:
            document = dict({"spec": given[BARE], "values": bare}, **document)
        print(json.dumps(document, indent=1, sort_keys=False))
    if args.plot:
        plot_blocks(args.plot, arch, table, unet_lr, size)
        print(f"wrote {args.plot}", file=sys.stderr)
    if problem is not None:
        raise problem  # after the table: what trains nothing is still shown
    return 0
