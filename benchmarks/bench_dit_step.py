"""DiT train-step time, ours vs upstream sd-scripts, same process, interleaved, for every DiT family.

    SD_SCRIPTS_DIR=/path/to/sd-scripts python benchmarks/bench_dit_step.py                 # all families, both cases
    SD_SCRIPTS_DIR=... python benchmarks/bench_dit_step.py --family anima --case block
    SD_SCRIPTS_DIR=... python benchmarks/bench_dit_step.py --family flux --case block --block single_blocks.0 \\
        --network-arg split_qkv=True --network-arg train_blocks=single

A family is: our entry point, upstream's network module, its tiny model (the skeleton recorded from
upstream's own tiny model, tests/fixtures/upstream/<family>/skeletons) and its real model (the
skeleton in lr_weights/models/data). Two cases per family:

- tiny:  the whole tiny model, every module both networks adapt;
- block: one block of the real model at its real widths (`--block`, a default per family), the
  rest of the model left out of the tree (the names stay those of the full model).

The skeletons carry names, class names and Linear/Conv2d shapes, not the model's forward, so a step
runs each adapted layer on its own random input of `--tokens` tokens (the block's attention, norms
and modulation are not run). That leaves the adapters the largest share of the step there is, the
strictest setting for the ratio. One step = forward of every adapted layer, MSE-style loss,
backward, AdamW step over the network's optimizer groups. Ratios are ours / upstream, medians of
`--reps` interleaved rounds (order rotated each round) after a warm-up round; min/min is the ratio
of the fastest rounds, the figure least moved by other load on a shared machine. Printed, never asserted.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import io
import json
import logging
import time
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

from _common import REPO, import_upstream, machine, median, setup_threads, table

import torch

from lr_weights.models.skeleton import build_from_skeleton

FIXTURES = REPO / "tests" / "fixtures" / "upstream"
DATA = REPO / "lr_weights" / "models" / "data"


@dataclass(frozen=True)
class Family:
    ours: str  # lr_weights.<ours>
    upstream: str  # sd-scripts networks.<upstream>
    fixtures: str  # tests/fixtures/upstream/<fixtures>/skeletons
    tiny: str  # tiny model skeleton there
    text_encoders: Tuple[Optional[str], ...]  # tiny text-encoder skeletons there (None: upstream takes None)
    real: str  # lr_weights/models/data/<real>.json
    block: str  # the real-width block the `block` case keeps


FAMILIES: Dict[str, Family] = {
    "flux": Family("flux", "lora_flux", "flux", "tiny_flux", ("tiny_te1", "tiny_te3"), "flux_dev", "double_blocks.0"),
    "anima": Family("anima", "lora_anima", "anima", "tiny_anima", ("tiny_qwen3",), "anima", "blocks.0"),
    "hunyuan_image": Family("hunyuan_image", "lora_hunyuan_image", "hunyuan_image", "tiny_hunyuan_image", (None, None), "hunyuan_image", "double_blocks.0"),
    "sd3": Family("sd3", "lora_sd3", "sd3", "tiny_sd35m", ("tiny_te1", "tiny_te2", "tiny_te3"), "sd35_medium", "joint_blocks.0"),
    "lumina": Family("lumina", "lora_lumina", "lumina", "tiny_lumina2", ("tiny_gemma2",), "lumina2", "layers.0"),
}


def read(path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


def only_block(skeleton: dict, block: str) -> dict:
    """The skeleton's root, the containers above `block`, and `block`'s subtree."""
    parents = {".".join(block.split(".")[:i]) for i in range(len(block.split(".")))}
    kept = [m for m in skeleton["modules"] if m["path"] in parents or m["path"] == block or m["path"].startswith(block + ".")]
    if not any(m["path"] == block for m in kept):
        raise SystemExit(f"--block {block!r} is not in the {skeleton.get('model', '?')} skeleton")
    return dict(skeleton, modules=kept)


def models(family: Family, case: str, block: str):
    folder = FIXTURES / family.fixtures / "skeletons"
    encoders = [None if name is None else build_from_skeleton(read(folder / f"{name}.json"), "cpu") for name in family.text_encoders]
    skeleton = read(folder / f"{family.tiny}.json") if case == "tiny" else only_block(read(DATA / f"{family.real}.json"), block)
    return [e.requires_grad_(False) if e is not None else None for e in encoders], build_from_skeleton(skeleton, "cpu").requires_grad_(False)


def build(module, encoders, dit, dim: int, args: Dict[str, str], device: str):
    with contextlib.redirect_stdout(io.StringIO()):
        network = module.create_network(1.0, dim, dim, None, encoders, dit, **args)
        network.apply_to(encoders, dit, False, True)
    network.to(device)  # as sd-scripts does (accelerator.prepare): the network follows the model's device
    groups = network.prepare_optimizer_params_with_multiple_te_lrs(None, 1e-4, 1e-4)[0]
    return network, torch.optim.AdamW(groups, lr=1e-4)


def sample_for(layer: torch.nn.Module, tokens: int, device: str) -> torch.Tensor:
    if isinstance(layer, torch.nn.Conv2d):
        side = max(layer.kernel_size[0], int(tokens**0.5))
        return torch.randn(1, layer.in_channels, side, side, device=device)
    return torch.randn(1, tokens, layer.in_features, device=device)


def synchronize(device: str) -> None:
    """Wait for queued GPU work, so a round's time is its kernels' time, not the launches'."""
    if device.startswith("cuda"):
        torch.cuda.synchronize(device)


def measure(family_name: str, case: str, block: str, options, upstream) -> List[Sequence[object]]:
    family = FAMILIES[family_name]
    ours = importlib.import_module(f"lr_weights.{family.ours}")
    torch.manual_seed(0)
    encoders, dit = models(family, case, block)
    dit.to(options.device)
    networks = {}
    for name, module in (("ours", ours), ("upstream", upstream)):
        torch.manual_seed(0)
        networks[name] = build(module, encoders, dit, options.dim, options.args, options.device)
        if name == "ours":  # unpatch the layers (our modules keep the class forward) before upstream patches them
            for lora in networks[name][0].unet_loras:
                lora.base_layer.__dict__.pop("forward", None)
    layers = {m.lora_name: m.base_layer for m in networks["ours"][0].unet_loras}
    theirs = {m.lora_name for m in networks["upstream"][0].unet_loras}
    if set(layers) != theirs:
        raise SystemExit(f"{family_name} {case}: ours adapts {len(layers)} layers, upstream {len(theirs)}, {len(set(layers) ^ theirs)} differ")
    forwards = {name: {m.lora_name: m.forward for m in net.unet_loras} for name, (net, _) in networks.items()}
    torch.manual_seed(1)
    inputs = {lora_name: sample_for(layer, options.tokens, options.device) for lora_name, layer in layers.items()}
    autocast = (
        torch.autocast(options.device.split(":")[0], dtype=torch.bfloat16)
        if options.autocast == "bf16"
        else contextlib.nullcontext()
    )
    configs = ["frozen base", "ours", "upstream"]

    def attach(name):
        for lora_name, layer in layers.items():
            if name == "frozen base":
                layer.__dict__.pop("forward", None)
            else:
                layer.forward = forwards[name][lora_name]

    times = {name: [] for name in configs}
    for round_ in range(options.reps + 1):
        for name in configs[round_ % 3:] + configs[: round_ % 3]:  # rotated: no config always follows the same one
            attach(name)
            synchronize(options.device)
            start = time.perf_counter()
            with autocast:
                loss = sum(layers[n](x.requires_grad_(name == "frozen base")).float().square().mean() for n, x in inputs.items())
            loss.backward()
            if name in networks:
                networks[name][1].step()
                networks[name][1].zero_grad(set_to_none=True)
            for x in inputs.values():
                x.grad = None
                x.requires_grad_(False)
            synchronize(options.device)
            if round_:
                times[name].append(time.perf_counter() - start)
    attach("frozen base")
    ours_ms, upstream_ms, base_ms = (1000 * median(times[n]) for n in ("ours", "upstream", "frozen base"))
    what = "tiny model" if case == "tiny" else f"{block} ({family.real}, real width)"
    fastest = min(times["ours"]) / min(times["upstream"])
    return [(family_name, what, len(layers), f"{base_ms:.1f}", f"{ours_ms:.1f}", f"{upstream_ms:.1f}", f"{ours_ms / upstream_ms:.3f}", f"{fastest:.3f}")]


HEADERS = ("family", "case", "layers", "frozen ms", "ours ms", "upstream ms", "ours/upstream", "min/min")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--family", action="append", choices=sorted(FAMILIES), help="repeatable; default: all")
    parser.add_argument("--case", action="append", choices=("tiny", "block"), help="repeatable; default: both")
    parser.add_argument("--block", help="the block the `block` case keeps (default per family, e.g. double_blocks.0)")
    parser.add_argument("--network-arg", action="append", default=[], metavar="KEY=VALUE", help="passed to both networks")
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--dim", type=int, default=16)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--device", default="cpu", help="cpu or cuda[:N]; GPU rounds are timed after torch.cuda.synchronize")
    parser.add_argument("--autocast", choices=("none", "bf16"), default="none", help="bf16: autocast as sd-scripts' --mixed_precision bf16")
    options = parser.parse_args()
    options.args = dict(arg.split("=", 1) for arg in options.network_arg)
    threads = setup_threads()
    logging.disable(logging.INFO)
    print(f"machine: {machine()}")
    print(f"settings: rank {options.dim}, alpha {options.dim}, {options.tokens} tokens, batch 1, "
          f"{'fp32' if options.autocast == 'none' else 'bf16 autocast'} on {options.device}, {threads} thread(s), "
          f"{options.reps} interleaved rounds after 1 warm-up, network args {options.args or 'none'}")
    rows = []
    for family_name in options.family or list(FAMILIES):
        upstream, how = import_upstream(FAMILIES[family_name].upstream)
        print(f"upstream {FAMILIES[family_name].upstream}: {how}", flush=True)
        if upstream is None:
            continue
        for case in options.case or ["tiny", "block"]:
            rows += measure(family_name, case, options.block or FAMILIES[family_name].block, options, upstream)
            print(table(HEADERS, rows[-1:]), flush=True)
    print()
    print(table(HEADERS, rows))


if __name__ == "__main__":
    main()
