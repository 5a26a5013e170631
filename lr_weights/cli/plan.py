"""`lr-weights plan`: the whole network a setting builds, before any GPU time is spent.

The network is built by the module itself (lr_weights.lora, lr_weights.dylora, lr_weights.lycoris,
or a DiT family's own: lr_weights.flux, lr_weights.sd3, lr_weights.lumina, lr_weights.anima,
lr_weights.hunyuan_image) over sd-scripts' module trees of that model rebuilt on the meta device: no
weights, no download. A checkpoint given with --model is only read for its key
names, to pick the architecture. Network args come from the command line (as sd-scripts takes
them), an sd-scripts --config_file TOML or a Kohya GUI JSON; later sources override earlier ones
(GUI JSON, then TOML, then options). The architecture is what training would use: --arch, else
--model, else the TOML's pretrained model (when the file is here) or the training script its
comments name (sdxl_train_network.py ...), else the GUI config's SDXL switch; sd1 when nothing says.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import re
import sys
from typing import Any, Dict, List, Optional, Tuple

from lr_weights.errors import NetworkArgError
from lr_weights.network.table import format_block_table
from lr_weights.archs import ARCHITECTURES
from lr_weights.cli._util import MODEL_CHOICES, add_subcommand, captured_logs, parse_pairs, read_json, read_toml

EXAMPLES = """examples:
  lr-weights plan --arch sdxl --network_dim 32 --network_alpha 16 --unet_lr 1e-4 \\
      --network_args "down_lr_weight=sine+.25" "mid_lr_weight=1" "up_lr_weight=cosine+.25"
  lr-weights plan --config-file lora.toml --arch sd1
  lr-weights plan --gui-config my_lora.json
  lr-weights plan --model sd_xl_base_1.0.safetensors --network_args conv_dim=8 block_lr_zero_threshold=0.5 down_lr_weight=linear
  lr-weights plan --gui-config my_lora.json --json > plan.json
  lr-weights plan --arch flux --network_dim 16 --network_alpha 16 --unet_lr 1e-4 \\
      --network_args "double_lr_weight=sine+.25" "single_lr_weight=cosine" "block_lr_zero_threshold=0.3"
  lr-weights plan --arch sd3-large --network_dim 16 --unet_lr 1e-4 --network_args "joint_lr_weight=sine" "block_lr_zero_threshold=0.3"
  lr-weights plan --arch lumina --network_dim 16 --unet_lr 1e-4 --network_args "layer_lr_weight=linear+.5" "refiner_lr_weight=1,1,.5,.5"
"""

SD_SCRIPTS_DEFAULT_LR = 2e-6  # train_util's --learning_rate default
def network_modules() -> Dict[Optional[str], str]:
    """Every --network_module plan takes -> the lr_weights module that plans it: ours, and upstream's
    as ours (each family's pair is its arch file's data)."""
    from lr_weights.archs import ARCHITECTURES

    modules: Dict[Optional[str], str] = {None: "lr_weights.lora", "lr_weights.dylora": "lr_weights.dylora", "networks.dylora": "lr_weights.dylora"}
    for arch in ARCHITECTURES.values():
        modules[arch.entry_point] = modules[arch.upstream_module] = arch.entry_point
    # planned as lr_weights.lycoris builds it (no duplicate-name crash)
    modules["lr_weights.lycoris"] = modules["lycoris.kohya"] = "lr_weights.lycoris"
    return modules


def register(subparsers) -> None:
    parser = add_subcommand(subparsers, "plan", "the per-block table, optimizer groups, sizes and warnings a setting produces (no GPU, no weights)", __doc__, EXAMPLES)
    parser.add_argument("--arch", choices=MODEL_CHOICES, help="architecture (default: from --model or the config, else sd1; flux = FLUX.1-dev, sd3 = SD3.5 medium, sd3-large = SD3.5 large, lumina = Lumina 2, anima = Anima 2B + Qwen3-0.6B, hunyuan_image = HunyuanImage-2.1)")
    parser.add_argument("--model", metavar="CHECKPOINT", help="a .safetensors/.ckpt checkpoint or diffusers folder; only its key names are read")
    parser.add_argument("--config-file", "--config_file", dest="config_file", metavar="TOML", help="an sd-scripts --config_file")
    parser.add_argument("--gui-config", dest="gui_config", metavar="JSON", help="a Kohya GUI LoRA config")
    parser.add_argument(
        "--network-module", "--network_module", dest="network_module",
        help="lr_weights.lora (default), lr_weights.dylora, lr_weights.lycoris (with network_args algo=...), or a DiT family's own module, lr_weights.flux / sd3 / lumina / anima / hunyuan_image (the default for that --arch)",
    )
    parser.add_argument("--network-dim", "--network_dim", dest="network_dim", help="as sd-scripts (its default: 4)")
    parser.add_argument("--network-alpha", "--network_alpha", dest="network_alpha", help="as sd-scripts (its default: 1)")
    parser.add_argument("--network-args", "--network_args", dest="network_args", nargs="*", default=None, metavar="KEY=VALUE")
    parser.add_argument("--network-dropout", "--network_dropout", dest="network_dropout", default=None)
    parser.add_argument("--unet-lr", "--unet_lr", dest="unet_lr", type=float)
    parser.add_argument(
        "--text-encoder-lr", "--text_encoder_lr", dest="text_encoder_lr", type=float, nargs="+", metavar="LR",
        help="as sd-scripts: one LR, or one per text encoder (SDXL: CLIP-L, bigG; FLUX: CLIP-L, T5)",
    )
    parser.add_argument("--learning-rate", "--learning_rate", dest="learning_rate", type=float)
    parser.add_argument("--json", action="store_true", help="print the plan as JSON")
    parser.set_defaults(run=run)


def _from_toml(path: str) -> Dict[str, Any]:
    table = read_toml(path)
    flat: Dict[str, Any] = {}
    for key, value in table.items():  # sd-scripts flattens sections
        if isinstance(value, dict):
            flat.update(value)
        else:
            flat[key] = value
    settings: Dict[str, Any] = {}
    for key in ("network_module", "network_dim", "network_alpha", "network_dropout", "unet_lr", "text_encoder_lr", "learning_rate"):
        if flat.get(key) is not None:
            settings[key] = flat[key]
    if flat.get("network_args") is not None:
        args = flat["network_args"]
        if isinstance(args, str):
            args = args.split()
        settings["network_args"] = parse_pairs([str(a) for a in args], f"network_args in {path}")
    arch, why = _arch_of_toml(path, flat)
    if arch is not None:
        settings["arch"], settings["arch_note"] = arch, why
    return settings


# The training script a TOML was written for, as its comments name it (ours and `lr-weights gui`'s
# do): each family's own (archs/: training_script), e.g. sdxl_train_network.py, flux_train_network.py.
_SCRIPT = re.compile(r"(?<![A-Za-z0-9])([a-z0-9_]*train_network\.py)\b")


def _model_of_script(script: str, v2: bool) -> Optional[str]:
    """The model a training script trains (its family's first; SD's train_network.py with v2: sd2)."""
    from lr_weights.archs import ARCHITECTURES

    for arch in ARCHITECTURES.values():
        if arch.training_script == script and arch.models:
            return "sd2" if arch.name == "sd" and v2 else arch.models[0].name
    return None


def _arch_of_toml(path: str, flat: Dict[str, Any]) -> Tuple[Optional[str], Optional[str]]:
    """(architecture, where it was read) as training would take it from this config, or (None, None)."""
    model = flat.get("pretrained_model_name_or_path")
    if isinstance(model, str) and os.path.exists(model):
        from lr_weights.models.reference import model_of_checkpoint

        return model_of_checkpoint(model), f"architecture read from {model} (pretrained_model_name_or_path in {path})"
    with open(path, encoding="utf-8") as handle:
        comments = " ".join(line.split("#", 1)[1] for line in handle if "#" in line)
    scripts = {match.group(1) for match in _SCRIPT.finditer(comments)}
    script = scripts.pop() if len(scripts) == 1 else None
    arch = _model_of_script(script, flat.get("v2") is True) if script else None
    if arch is not None:
        return arch, f"architecture {arch}: {path} is written for {script}"
    if flat.get("v2") is True:
        return "sd2", f"architecture sd2: v2 = true in {path}"
    return None, None


def _from_gui(path: str) -> Dict[str, Any]:
    from lr_weights.cli.gui_config import gui_to_sd_scripts

    converted = gui_to_sd_scripts(read_json(path), path)
    table = converted.table
    settings = {key: table[key] for key in ("network_module", "network_dim", "network_alpha", "network_dropout", "unet_lr", "text_encoder_lr", "learning_rate") if key in table}
    settings["network_args"] = dict(converted.network_args)
    if converted.arch.kind == "dit":  # SD3's joint-block count is the model's: --model or --arch sd3-large tells large
        settings["arch"] = converted.arch.name
    else:
        settings["arch"] = "sdxl" if converted.arch.is_sdxl else ("sd2" if table.get("v2") else "sd1")
    return settings


def gather(args: argparse.Namespace) -> Tuple[str, str, Dict[str, Any], List[str]]:
    """(architecture, module, settings, notes) from every source, later ones overriding."""
    settings: Dict[str, Any] = {"network_args": {}}
    notes: List[str] = []
    for path, reader in ((args.gui_config, _from_gui), (args.config_file, _from_toml)):
        if path:
            found = reader(path)
            network_args = found.pop("network_args", None)
            settings.update(found)
            if network_args is not None:
                settings["network_args"] = network_args
    for key in ("network_module", "network_dim", "network_alpha", "network_dropout", "unet_lr", "text_encoder_lr", "learning_rate"):
        if getattr(args, key) is not None:
            settings[key] = getattr(args, key)
    if isinstance(settings.get("text_encoder_lr"), list) and len(settings["text_encoder_lr"]) == 1:
        settings["text_encoder_lr"] = settings["text_encoder_lr"][0]  # one value: as older hosts pass it
    if args.network_args is not None:
        settings["network_args"] = parse_pairs(args.network_args, "--network_args")

    from lr_weights.models.reference import model_of_checkpoint

    arch = args.arch
    if arch is None and args.model:
        arch = model_of_checkpoint(args.model)
        notes.append(f"architecture {arch} read from {args.model}")
    if arch is None:
        arch = settings.get("arch")
        if settings.get("arch_note"):
            notes.append(settings["arch_note"])
    if arch is None:
        arch = "sd1"
        notes.append("architecture not given: planning for sd1 (use --arch sd2/sdxl or --model)")
    elif args.model and args.arch:
        found = model_of_checkpoint(args.model)
        if found != arch:
            raise NetworkArgError("--arch", arch, f"the architecture of {args.model}, which is {found}")

    if settings.get("learning_rate") is None:
        settings["learning_rate"] = SD_SCRIPTS_DEFAULT_LR
        unset = [key for key in ("unet_lr", "text_encoder_lr") if settings.get(key) is None]
        if unset:
            notes.append(f"learning_rate not given: sd-scripts' default {SD_SCRIPTS_DEFAULT_LR:g} applies to {' and '.join(unset)}")
    return arch, module_for(arch, settings.get("network_module")), settings, notes


def module_for(arch: str, module: Optional[str]) -> str:
    """The lr_weights module that plans `module` for `arch`: a DiT-kind model is trained by its
    family's entry point only (the default there); the U-Net modules train the SD family."""
    from lr_weights.archs import ARCHITECTURES
    from lr_weights.archs.detect import architecture_of_model

    modules = network_modules()
    family = architecture_of_model(arch)
    if module is None and family.kind == "dit":
        module = family.entry_point
    entry_points = {name: a.entry_point for name, a in ARCHITECTURES.items() if a.kind == "dit"}
    if module not in modules:
        raise NetworkArgError(
            "network_module", module,
            "lr_weights.lora, lr_weights.dylora or lr_weights.lycoris, or the family's own module for --arch "
            f"{', '.join(entry_points)} ({', '.join(sorted(set(entry_points.values())))}); networks.lora / networks.dylora / "
            "lycoris.kohya and upstream's " + " / ".join(sorted({a.upstream_module for a in ARCHITECTURES.values() if a.kind == "dit"})) + " are planned as those",
        )
    if (modules[module] in entry_points.values() or family.kind == "dit") and modules[module] != family.entry_point:
        raise NetworkArgError(
            "network_module", module,
            f"a module for {arch}: " + ", ".join(f"{m} trains {a} (--arch {a})" for a, m in entry_points.items()) + ", lr_weights.lora / dylora / lycoris the SD family",
        )
    return modules[module]


def _safetensors_size(state: Dict[str, Any]) -> int:
    """Bytes of the fp16 safetensors file without metadata: header (as safetensors writes it) + data."""
    header: Dict[str, Any] = {}
    offset = 0
    for name, tensor in state.items():
        size = tensor.numel() * 2
        header[name] = {"dtype": "F16", "shape": list(tensor.shape), "data_offsets": [offset, offset + size]}
        offset += size
    text = json.dumps(header, separators=(",", ":"))
    padded = len(text) + (-len(text)) % 8
    return 8 + padded + offset


def build_plan(arch: str, module_name: str, settings: Dict[str, Any]) -> Dict[str, Any]:
    from lr_weights.models.reference import build_reference_model, skipped_weight_init

    module = importlib.import_module(module_name)
    text_encoder, unet = build_reference_model(arch)
    network_args = dict(settings.get("network_args") or {})
    with captured_logs() as warnings:
        with skipped_weight_init():
            network = module.create_network(
                1.0, settings.get("network_dim"), settings.get("network_alpha"), None, text_encoder, unet,
                neuron_dropout=settings.get("network_dropout"), **network_args
            )
        te_lr, unet_lr, lr = settings.get("text_encoder_lr"), settings.get("unet_lr"), settings.get("learning_rate")
        # As the newest sd-scripts hosts call it: --text_encoder_lr may hold one LR per text encoder.
        params, descriptions = network.prepare_optimizer_params_with_multiple_te_lrs(te_lr, unet_lr, lr, with_descriptions=True)
    rows = network.block_table()
    state = network.state_dict()
    return {
        "arch": arch,
        "network_module": module_name,
        "network_dim": settings.get("network_dim"),
        "network_alpha": settings.get("network_alpha"),
        "network_args": network_args,
        "learning_rates": {"text_encoder_lr": te_lr, "unet_lr": unet_lr, "learning_rate": lr},
        "rows": rows,
        "groups": [
            {"description": d, "lr": g["lr"], "tensors": len(g["params"]), "params": sum(p.numel() for p in g["params"])} for g, d in zip(params, descriptions)
        ],
        "modules": len(network.all_loras),
        "params": sum(p.numel() for p in network.parameters()),
        "file_bytes_fp16": _safetensors_size(state),
        "warnings": list(warnings),
    }


def _trains_nothing(plan: Dict[str, Any]) -> Optional[str]:
    if plan["modules"] == 0:
        return "no adapter modules would be created"
    if not plan["groups"]:
        return "no optimizer group has a learning rate above 0 (give --unet_lr, --text_encoder_lr or --learning_rate)"
    return None


def format_plan(plan: Dict[str, Any], notes: List[str]) -> str:
    lines = [f"lr_weights plan: {plan['arch']} ({plan['network_module']}), sd-scripts module tree on the meta device"]
    lines.append(f"network_dim={plan['network_dim'] if plan['network_dim'] is not None else '4 (default)'} network_alpha={plan['network_alpha'] if plan['network_alpha'] is not None else '1 (default)'}")
    if plan["network_args"]:
        lines.append("network_args: " + " ".join(f"{k}={v}" for k, v in plan["network_args"].items()))
    lines += [f"note: {n}" for n in notes]
    lines.append("")
    rates = plan["learning_rates"]
    base_unet_lr = rates["unet_lr"] if rates["unet_lr"] is not None else rates["learning_rate"]
    lines.append(format_block_table(plan["rows"], base_unet_lr))
    lines.append("")
    lines.append("optimizer groups:")
    if not plan["groups"]:
        lines.append("  (none)")
    for group in plan["groups"]:
        lines.append(f"  {group['description']:<22} lr={group['lr']:.6g}  tensors={group['tensors']}  params={group['params']:,}")
    lines.append("")
    size = plan["file_bytes_fp16"]
    lines.append(f"totals: {plan['modules']} modules, {plan['params']:,} trainable params, file at fp16 about {size / 2**20:.1f} MiB ({size:,} bytes before metadata)")
    pruned = [r.name for r in plan["rows"] if r.status == "pruned"]
    lines.append("pruned blocks: " + (", ".join(pruned) if pruned else "none"))
    lines.append("warnings:" + ("" if plan["warnings"] else " none"))
    lines += [f"  - {w}" for w in plan["warnings"]]
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    arch, module, settings, notes = gather(args)
    plan = build_plan(arch, module, settings)
    problem = _trains_nothing(plan)
    if args.json:
        document = dict(plan, rows=[r.__dict__ for r in plan["rows"]], notes=notes, trains=problem is None)
        print(json.dumps(document, indent=1, default=str))
    else:
        print(format_plan(plan, notes))
    if problem is not None:
        print(f"lr-weights plan: error: this setting trains nothing: {problem}", file=sys.stderr)
        return 1
    return 0

