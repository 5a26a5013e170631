"""create_network + apply_to time on SD1.5 and SDXL skeletons (meta device, no weights read).

    python benchmarks/bench_startup.py [--reps 5]

Upstream `networks.lora` is timed in the same process when SD_SCRIPTS_DIR is set.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import logging
import time

from _common import SKELETONS, import_upstream, machine, median, setup_threads, table

import torch

from lr_weights import lora
from lr_weights.models.skeleton import load_skeleton

CASES = {
    "SD1.5 LoRA": ("sd1", {}),
    "SD1.5 LoCon+block LR": ("sd1", {"conv_dim": "8", "conv_alpha": "4", "down_lr_weight": "sine", "up_lr_weight": "cosine"}),
    "SDXL LoRA": ("sdxl", {}),
    "SDXL LoCon+block LR": ("sdxl", {"conv_dim": "8", "conv_alpha": "4", "down_lr_weight": "sine", "up_lr_weight": "cosine"}),
}


def models(arch):
    if arch == "sdxl":
        return [load_skeleton(SKELETONS / "sdxl_te1.json"), load_skeleton(SKELETONS / "sdxl_te2.json")], load_skeleton(SKELETONS / "sdxl_unet.json")
    return load_skeleton(SKELETONS / "sd1_te.json"), load_skeleton(SKELETONS / "sd1_unet.json")


def timed(module, arch, args) -> float:
    te, unet = models(arch)  # fresh, unpatched layers each time (not timed)
    torch.manual_seed(0)
    with contextlib.redirect_stdout(io.StringIO()):  # upstream prints its block settings
        start = time.perf_counter()
        network = module.create_network(1.0, 16, 8, None, te, unet, **args)
        network.apply_to(te, unet, True, True)
        return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--reps", type=int, default=5)
    options = parser.parse_args()
    setup_threads()
    logging.disable(logging.INFO)  # the per-block table and upstream's prints are not timed noise we want
    upstream, how = import_upstream("lora")
    print(f"machine: {machine()}\nupstream: {how if upstream else 'not run (' + how + ')'}")
    rows = []
    ratios = []
    for name, (arch, args) in CASES.items():
        runners = {"ours": lora}
        # Upstream recognises SDXL by its own class; on a skeleton (or with a stubbed library) it
        # would treat SDXL as SD1, so it is timed on SD1.5 only.
        if upstream is not None and arch == "sd1":
            runners["upstream"] = upstream
        times = {key: [] for key in runners}
        for _ in range(options.reps):
            for key, module in runners.items():  # interleaved
                times[key].append(timed(module, arch, args))
        ours = median(times["ours"])
        up = median(times["upstream"]) if "upstream" in times else None
        if up:
            ratios.append(ours / up)
        rows.append((name, f"{ours * 1000:.0f} ms", f"{up * 1000:.0f} ms" if up else "-", f"{ours / up:.2f}" if up else "-"))
    print(table(("case", "ours", "upstream", "ours/upstream"), rows))
    summary = f"median create_network+apply_to: SD1.5 {rows[0][1]}, SDXL {rows[2][1]}"
    if ratios:
        summary += f"; ours/upstream {min(ratios):.2f}-{max(ratios):.2f}"
    print("summary:", summary)


if __name__ == "__main__":
    main()
