"""The real SD3.5 medium / large (+ CLIP-L, CLIP-G, T5-XXL) and Lumina 2 2B (+ Gemma2 2B) module
trees (recorded skeletons, on the meta device): per-block module and parameter counts and module
names equal upstream lora_sd3's / lora_lumina's (sd35_counts.json, lumina2_counts.json)."""

import json
from pathlib import Path

import pytest
import torch

from lr_weights import lumina, sd3
from lr_weights.models.reference import build_reference_model

UPSTREAM = Path(__file__).resolve().parents[1] / "fixtures" / "upstream"
SD3_COUNTS = json.loads((UPSTREAM / "sd3" / "sd35_counts.json").read_text(encoding="utf-8"))
LUMINA_COUNTS = json.loads((UPSTREAM / "lumina" / "lumina2_counts.json").read_text(encoding="utf-8"))
REFERENCE = {"sd35_medium": "sd3", "sd35_large": "sd3-large"}


def label(name: str) -> str:
    """The recorders' block labels (record_sd3_skeletons.py / record_lumina_skeletons.py)."""
    parts = name.split("_")
    for prefix, text in (("lora_te1_", "TE1"), ("lora_te2_", "TE2"), ("lora_te3_", "TE3"), ("lora_te_", "TE")):
        if name.startswith(prefix):
            return text
    if name.startswith("lora_unet_joint_blocks_"):
        return f"J{int(parts[4]):02d}"
    if name.startswith("lora_unet_layers_"):
        return f"L{int(parts[3]):02d}"
    if name.startswith(("lora_unet_context_refiner_", "lora_unet_noise_refiner_")):
        return f"{parts[2][0].upper()}{int(parts[4])}"
    return "EMB"  # embedders; final_layer is labelled by the caller (SD3: EMB, Lumina: FINAL)


def per_block(network, final_label: str) -> dict:
    counts = {}
    for module in network.all_loras:
        name = label(module.lora_name)
        if module.lora_name.startswith("lora_unet_final_layer_"):
            name = final_label
        slot = counts.setdefault(name, {"modules": 0, "params": 0})
        slot["modules"] += 1
        slot["params"] += sum(p.numel() for p in module.parameters())
    return counts


def check(module, model: str, expected: dict, final_label: str):
    encoders, dit = build_reference_model(model)
    with torch.device("meta"):  # neither the base weights nor the adapters are allocated
        network = module.create_network(1.0, expected["network_dim"], expected["network_alpha"], None, encoders, dit, **expected["network_args"])
    assert per_block(network, final_label) == expected["per_block"]
    if "module_names_in_order" in expected:
        assert [m.lora_name for m in network.all_loras] == expected["module_names_in_order"]


@pytest.mark.parametrize("case", sorted(SD3_COUNTS["cases"]))
def test_sd35_counts_equal_upstream(case):
    model, _ = case.split("/")
    check(sd3, REFERENCE[model], SD3_COUNTS["cases"][case], "EMB")  # final_layer modules come from emb_dims


@pytest.mark.parametrize("case", sorted(LUMINA_COUNTS["cases"]))
def test_lumina2_counts_equal_upstream(case):
    check(lumina, "lumina", LUMINA_COUNTS["cases"][case], "FINAL")
