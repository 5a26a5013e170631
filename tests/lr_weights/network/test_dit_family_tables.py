"""SD3 and Lumina: the per-block table and the saved file's metadata name each family's blocks
(J00.. of the loaded model; C0, C1, N0, N1, L00..), with the LR weight and dims given."""

from __future__ import annotations

import json
import os
import tempfile

import pytest
from safetensors import safe_open

from lr_weights import lumina, sd3
from tests.dit_figures import Figures, create

SD3_FIGURES = Figures("sd3")
LUMINA_FIGURES = Figures("lumina")


def saved_table(network) -> list:
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "lora.safetensors")
        network.save_weights(path, None, {})
        with safe_open(path, "pt") as handle:
            return json.loads(handle.metadata()["lr_weights_blocks"])


@pytest.mark.parametrize("model,blocks", [("sd35m", 24), ("sd35l", 38)])
def test_sd3_table_has_one_row_per_joint_block_of_the_model(model, blocks):
    spec = dict(SD3_FIGURES.case("s01_plain"), model=model, network_args={"joint_lr_weight": "linear+.5", "joint_block_dims": ",".join(["8"] * blocks)})
    encoders = [SD3_FIGURES.model(n) for n in ("tiny_te1", "tiny_te2", "tiny_te3")]
    network = create(sd3, spec, encoders, SD3_FIGURES.model(f"tiny_{model}"))
    rows = {row["name"]: row for row in saved_table(network)}
    for i in range(blocks):
        row = rows[f"J{i:02d}"]
        assert row["lr_weight"] == pytest.approx(i / (blocks - 1) + 0.5, rel=1e-15)
        assert row["linear"] == "8/1" and row["status"] == "train"
    # SD3.5 medium: blocks 0-12 have attn2 (12 modules), 13-22 have 10, the last (pre_only context) 7
    if model == "sd35m":
        assert [rows[f"J{i:02d}"]["modules"] for i in (0, 12, 13, 22, 23)] == [12, 12, 10, 10, 7]
    assert f"J{blocks:02d}" not in rows


def test_lumina_table_names_refiners_layers_and_out():
    spec = dict(LUMINA_FIGURES.case("l01_plain"), network_args={"refiner_lr_weight": "1,0.5,0.25,0", "layer_lr_weight": "cosine", "block_lr_zero_threshold": "0.1"})
    network = create(lumina, spec, [LUMINA_FIGURES.model("tiny_gemma2")], LUMINA_FIGURES.model("tiny_lumina2"))
    rows = {row["name"]: row for row in saved_table(network)}
    assert [rows[n]["lr_weight"] for n in ("C0", "C1", "N0", "N1")] == [1.0, 0.5, 0.25, 0.0]
    assert rows["C0"]["modules"] == 5 and rows["N0"]["modules"] == 6 and rows["N1"]["modules"] == 0
    assert rows["L00"]["lr_weight"] == pytest.approx(1.0) and rows["L00"]["modules"] == 6
    assert rows["L25"]["modules"] == 0  # cosine reaches 0 at the last layer: pruned by the threshold
    assert rows["OUT"]["modules"] == 2 and rows["OUT"]["lr_weight"] == 1.0


@pytest.mark.parametrize("family", ["sd3", "lumina"])
def test_network_from_its_own_file_has_the_same_modules_and_weights(family, tmp_path):
    """create_network_from_weights (what the trainers call with --dim_from_weights and for merging)
    rebuilds each module with the file's dim and alpha (a split_qkv module as one plain module of
    parts x dim, as upstream); loading gives back the saved tensors."""
    import torch

    if family == "sd3":
        figures, module = SD3_FIGURES, sd3
        spec = dict(figures.case("s01_plain"), network_args={"joint_block_dims": ",".join(str(2 + i % 3) for i in range(24)), "emb_dims": "2,2,2,2,2,2", "train_t5xxl": "True"})
        encoders, model = [figures.model(n) for n in ("tiny_te1", "tiny_te2", "tiny_te3")], figures.model("tiny_sd35m")
    else:
        figures, module = LUMINA_FIGURES, lumina
        spec = dict(figures.case("l01_plain"), network_args={"split_qkv": "True", "embedder_dims": "2,0,3"})
        encoders, model = [figures.model("tiny_gemma2")], figures.model("tiny_lumina2")
    network = create(module, spec, encoders, model)
    with torch.no_grad():
        for parameter in network.parameters():
            parameter.normal_()
    path = str(tmp_path / "lora.safetensors")
    network.save_weights(path, None, {})
    again, _ = module.create_network_from_weights(1.0, path, None, encoders, model)
    again.load_weights(path)
    merged = {m.lora_name: (m.lora_dim * (len(m.split_dims) if getattr(m, "split_dims", None) else 1), float(m.alpha) * (len(m.split_dims) if getattr(m, "split_dims", None) else 1)) for m in network.all_loras}
    assert {m.lora_name: (m.lora_dim, float(m.alpha)) for m in again.all_loras} == merged
    saved, loaded = network.state_dict(), again.state_dict()
    assert sorted(saved) == sorted(loaded)  # a split module's merged keys come as upstream's: down, up, alpha
    assert all(torch.equal(saved[k], loaded[k]) for k in saved)
