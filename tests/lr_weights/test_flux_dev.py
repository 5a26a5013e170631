"""The real FLUX.1-dev, CLIP-L and T5-XXL module trees (recorded skeletons, on the meta device):
per-block module and parameter counts equal upstream lora_flux's (flux_dev_counts.json)."""

import json
from pathlib import Path

import pytest
import torch

from lr_weights import flux as lora_flux
from lr_weights.archs import FLUX
from lr_weights.models.skeleton import load_skeleton

DATA = Path(__file__).resolve().parents[2] / "lr_weights" / "models" / "data"
COUNTS = json.loads((Path(__file__).resolve().parents[1] / "fixtures" / "upstream" / "flux" / "flux_dev_counts.json").read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def flux_dev():
    return [load_skeleton(str(DATA / "flux_te1.json")), load_skeleton(str(DATA / "flux_te3.json"))], load_skeleton(str(DATA / "flux_dev.json"))


def per_block(network) -> dict:
    counts = {name: {"modules": 0, "params": 0} for name in ("CLIP", "T5") + FLUX.block_names[:-1]}
    for module in network.all_loras:
        if module.lora_name.startswith("lora_te1_"):
            name = "CLIP"
        elif module.lora_name.startswith("lora_te3_"):
            name = "T5"
        else:
            name = FLUX.block_name(FLUX.locate(module.lora_name))
        counts[name]["modules"] += 1
        counts[name]["params"] += sum(p.numel() for p in module.parameters())
    return counts


@pytest.mark.parametrize("slug", sorted(COUNTS["cases"]))
def test_flux_dev_counts_equal_upstream(flux_dev, slug):
    encoders, flux = flux_dev
    expected = COUNTS["cases"][slug]
    with torch.device("meta"):  # 12B base weights and the adapters never allocated
        network = lora_flux.create_network(1.0, expected["network_dim"], expected["network_alpha"], None, encoders, flux, **expected["network_args"])
    assert per_block(network) == expected["per_block"]
    if "module_names_in_order" in expected:
        assert [m.lora_name for m in network.all_loras] == expected["module_names_in_order"]
