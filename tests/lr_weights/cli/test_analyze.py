"""`lr-weights analyze` end to end on tiny models saved to disk: table, JSON, several files,
--suggest, --plot, and every refusal as one line before any work."""

import json

import pytest
import torch
from safetensors.torch import save_file

from lr_weights.args.lbw import parse_lbw
from lr_weights.archs import SD, SDXL

from tests.lr_weights.analysis.lora_files import random_lora
from tests.lr_weights.analysis.models_on_disk import write_diffusers_folder, write_flux_file, write_single_file
from .conftest import png_size

pytest.importorskip("diffusers")
pytest.importorskip("transformers")
FAST = ["--timesteps", "2", "--no-progress"]
SIZES = ["--samples", "2", "--resolution", "64"]
FAST = FAST + SIZES


def attention_and_text(name):
    return "_attentions_" in name or "_transformer_blocks_" in name or (name.startswith("lora_te") and ("self_attn" in name or "mlp" in name))


@pytest.fixture(scope="module")
def sd1(tmp_path_factory):
    from lr_weights.analysis.base_model import load_denoiser

    root = tmp_path_factory.mktemp("sd1")
    folder = write_diffusers_folder(root / "model", "sd1")
    layers = load_denoiser(str(folder), torch.device("cpu"), torch.float32, "sd1").layers
    first = random_lora(root / "v188.safetensors", layers, attention_and_text, seed=1)
    second = random_lora(root / "v189.safetensors", layers, lambda n: attention_and_text(n) and "down_blocks" not in n, seed=2)
    te_only = random_lora(root / "te.safetensors", layers, lambda n: n.startswith("lora_te"), seed=3)
    return folder, first, second, te_only


def analyse_json(cli, *argv):
    result = cli("analyze", *argv, "--json", *FAST)
    assert result.code == 0, result.err
    return json.loads(result.out)


def test_json_rows_and_shares(cli, sd1):
    folder, first, _, _ = sd1
    document = analyse_json(cli, first, "--model", folder)
    (effect,) = document["files"]
    blocks = {row["block"]: row for row in effect["blocks"]}
    # The tiny U-Net has attention in its first level (IN01, IN02), the middle and the last up level (OUT03..OUT05).
    assert list(blocks) == ["IN01", "IN02", "M00", "OUT03", "OUT04", "OUT05"]
    assert sum(row["share"] for row in blocks.values()) == pytest.approx(1.0, abs=1e-12)
    assert all(row["norm"] > 0 and row["modules"] > 0 for row in blocks.values())
    assert effect["total_effect"] > 0 and effect["arch"] == "sd1"
    assert "not measured without --prompt" in effect["notes"][0]
    assert document["settings"]["samples"] == 2 and document["settings"]["resolution"] == 64


def test_prompts_give_the_text_encoder_its_row(cli, sd1):
    folder, first, _, _ = sd1
    document = analyse_json(cli, first, "--model", folder, "--prompt", "a cat", "--prompt", "a dog")
    rows = [row["block"] for row in document["files"][0]["blocks"]]
    assert rows[0] == "TE" and rows[1:] == ["IN01", "IN02", "M00", "OUT03", "OUT04", "OUT05"]
    assert document["files"][0]["blocks"][0]["share"] > 0


def test_block_batching_on_the_diffusers_unet(cli, sd1):
    """--block-batching hooks diffusers' own layers (batch first everywhere, or the hook refuses):
    the same rows, shares summing to 1, the rows per forward asked for. Equality with the default
    path is tested in float64 (tests/lr_weights/analysis/test_batched.py)."""
    folder, first, second, _ = sd1
    argv = (first, second, "--model", folder, "--prompt", "a cat")
    default = analyse_json(cli, *argv)
    batched = analyse_json(cli, *argv, "--block-batching", "--batch-size", "3")
    assert batched["settings"]["batch_blocks"] is True and batched["rows_per_forward"] == 3
    assert default["settings"]["batch_blocks"] is False
    for got, want in zip(batched["files"], default["files"]):
        assert [b["block"] for b in got["blocks"]] == [b["block"] for b in want["blocks"]]
        assert sum(b["share"] for b in got["blocks"]) == pytest.approx(1.0, abs=1e-12)
        assert got["total_effect"] > 0 and got["blocks"][0]["block"] == "TE"


def test_table_and_files_side_by_side(cli, sd1):
    folder, first, second, _ = sd1
    result = cli("analyze", first, second, "--model", folder, *FAST)
    assert result.code == 0, result.err
    lines = result.out.splitlines()
    header = next(line for line in lines if line.startswith("block"))
    assert "[1] share" in header and "[2] share" in header
    in01 = next(line for line in lines if line.startswith("IN01"))
    assert in01.split()[-4:] == ["-", "-", "-", "-"]  # the second file has no down-block modules
    assert "v188.safetensors" in result.out and "v189.safetensors" in result.out
    # The same samples for both: the second file's numbers do not depend on the first being there.
    together = analyse_json(cli, first, second, "--model", folder)["files"][1]
    alone = analyse_json(cli, second, "--model", folder)["files"][0]
    assert together["blocks"] == alone["blocks"]


def test_suggest_writes_vectors_the_parsers_read(cli, sd1):
    folder, first, _, _ = sd1
    document = analyse_json(cli, first, "--model", folder, "--suggest", "0.25")
    effect = document["files"][0]
    suggestion = effect["suggestion"]
    dropped = {row["block"] for row in effect["blocks"] if row["share"] < 0.25}
    assert set(suggestion["dropped"]) == dropped and dropped
    weights = parse_lbw(SD, suggestion["lbw"])
    for row in effect["blocks"]:
        assert weights.blocks[row["index"]] == (0.0 if row["block"] in dropped else 1.0)
    args = dict(suggestion["network_args"])
    assert set(args) == {"down_lr_weight", "mid_lr_weight", "up_lr_weight", "block_lr_zero_threshold"}
    from lr_weights.args.weights import parse_float_list

    down = parse_float_list("down_lr_weight", args["down_lr_weight"])
    assert [down[SD.block_index_of(b)] for b in ("IN01", "IN02")] == [0.0 if b in dropped else 1.0 for b in ("IN01", "IN02")]
    text = cli("analyze", first, "--model", folder, "--suggest", "0.25", *FAST).out
    assert "cut-off 0.25" in text and f"LBW vector (inference): {suggestion['lbw']}" in text


def test_plot_has_one_bar_per_block(cli, sd1, tmp_path):
    folder, first, _, _ = sd1
    plot = tmp_path / "shares.png"
    shares = {r["block"]: r["share"] for r in analyse_json(cli, first, "--model", folder)["files"][0]["blocks"]}
    cutoff = sorted(shares.values())[2]  # two blocks under it: drawn as dropped stubs
    result = cli("analyze", first, "--model", folder, "--plot", plot, "--plot-size", "800x400", "--suggest", cutoff, *FAST)
    assert result.code == 0, result.err
    assert png_size(plot) == (800, 400)
    assert count_bars(plot) == len(shares) == 6
    plain = tmp_path / "plain.png"
    assert cli("analyze", first, "--model", folder, "--plot", plain, "--plot-size", "800x400", *FAST).code == 0
    assert count_bars(plain) == 6


def count_bars(path):
    """Bars standing on the axes' bottom edge (the figure leaves 22% of its height below the axes):
    columns with any non-background pixel in the 8 rows above it, joined across gaps narrower than
    a bar spacing could be (a hatched bar's own white gaps), so each bar counts once."""
    import matplotlib.image

    pixels = matplotlib.image.imread(str(path))[:, :, :3]
    height, width = pixels.shape[:2]
    bottom = int(round(height * (1 - 0.22)))
    window = pixels[bottom - 10 : bottom - 2]
    left, right = int(width * 0.1) + 3, int(width * 0.98) - 3  # inside the axes: no spines, no tick labels
    inside = [left <= x < right and bool((abs(window[:, x] - 1.0) > 0.05).any()) for x in range(width)]
    runs, start, gap = [], None, 0
    for x, flag in enumerate(inside + [False] * 20):
        if flag:
            if start is None:
                start = x
            gap = 0
        elif start is not None:
            gap += 1
            if gap > 8:
                runs.append(x - gap - start + 1)
                start, gap = None, 0
    return len(runs)


# ---- refusals: one line naming the path and what was expected, before the model is loaded ----


@pytest.fixture
def no_loading(monkeypatch):
    import lr_weights.analysis.base_model as base_model

    def refuse(*args, **kwargs):
        raise AssertionError("the model was loaded before the input was checked")

    monkeypatch.setattr(base_model, "load_denoiser", refuse)


def error_line(result):
    assert result.code == 2
    assert result.usage.startswith("usage: lr-weights analyze")
    lines = result.err.strip().splitlines()
    assert len(lines) == 1, result.err
    return lines[0]


def test_lora_of_another_architecture(cli, sd1, tmp_path, no_loading):
    folder = sd1[0]
    sdxl_lora = tmp_path / "sdxl_lora.safetensors"
    save_file({"lora_unet_input_blocks_4_1_proj_in.lora_down.weight": torch.zeros(2, 8), "lora_unet_input_blocks_4_1_proj_in.lora_up.weight": torch.zeros(8, 2)}, str(sdxl_lora))
    line = error_line(cli("analyze", sdxl_lora, "--model", folder, *FAST))
    assert str(sdxl_lora) in line and "SDXL LoRA" in line and "expected a LoRA trained on SD1" in line


def test_file_without_unet_modules(cli, sd1, no_loading):
    folder, _, _, te_only = sd1
    line = error_line(cli("analyze", te_only, "--model", folder, *FAST))
    assert str(te_only) in line and "no U-Net modules" in line


def test_missing_model(cli, sd1, tmp_path, no_loading):
    line = error_line(cli("analyze", sd1[1], "--model", tmp_path / "nowhere.safetensors", *FAST))
    assert "nowhere.safetensors" in line and "no such file or folder" in line and "expected a diffusers folder" in line


@pytest.mark.parametrize("kind", ["text", "folder"])
def test_model_it_cannot_read(cli, sd1, tmp_path, no_loading, kind):
    if kind == "text":
        bad = tmp_path / "model.safetensors"
        bad.write_text("not a checkpoint")
    else:
        bad = tmp_path / "folder"
        bad.mkdir()
    line = error_line(cli("analyze", sd1[1], "--model", bad, *FAST))
    assert str(bad) in line and "expected a diffusers SD1/SD2/SDXL folder" in line


def test_missing_lora(cli, sd1, tmp_path, no_loading):
    line = error_line(cli("analyze", tmp_path / "gone.safetensors", "--model", sd1[0], *FAST))
    assert "gone.safetensors" in line and "not found" in line


@pytest.mark.parametrize(
    "flags, expected",
    [
        (["--dtype", "fp8"], "--dtype='fp8' is not valid: expected fp32, bf16 or fp16"),
        (["--samples", "0"], "--samples='0' is not valid: expected a whole number >= 1"),
        (["--suggest", "2"], "--suggest='2' is not valid"),
        (["--device", "tpu"], "--device='tpu' is not valid"),
        (["--plot-size", "10x10", "--plot", "x.png"], "--plot-size='10x10' is not valid"),
    ],
)
def test_bad_flags(cli, sd1, no_loading, flags, expected):
    folder, first, _, _ = sd1
    line = error_line(cli("analyze", first, "--model", folder, *FAST, *flags))
    assert expected in line


def test_resolution_the_model_cannot_take(cli, sd1):
    folder, first, _, _ = sd1
    line = error_line(cli("analyze", first, "--model", folder, *FAST, "--resolution", "40"))
    assert "--resolution='40'" not in line and "--resolution=40" in line and "a multiple of 16" in line  # the tiny U-Net downsamples once


def test_prompt_needs_a_tokenizer(cli, sd1, tmp_path):
    single = write_single_file(tmp_path / "sd1.safetensors", "sd1")
    line = error_line(cli("analyze", sd1[1], "--model", single, "--prompt", "a cat", *FAST))
    assert str(single) in line and "no tokenizer" in line


def test_out_of_memory_names_the_flag(sd1, monkeypatch):
    from lr_weights.analysis.measure import MeasureSettings, draw_samples, predict_all
    from lr_weights.analysis.tiny_denoisers import tiny_denoiser

    import dataclasses

    def oom(*args):
        raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")

    denoiser = dataclasses.replace(tiny_denoiser("sd1"), predict=oom)
    samples = draw_samples(denoiser, MeasureSettings(samples=2), 64)
    with pytest.raises(ValueError, match="lower --batch-size"):
        predict_all(denoiser, samples, {}, 2)


def test_sdxl_single_file_and_flux_file(cli, tmp_path):
    from lr_weights.analysis.base_model import load_denoiser
    from lr_weights.models.tiny_flux import FluxConfig

    single = write_single_file(tmp_path / "sdxl.safetensors", "sdxl")
    layers = load_denoiser(str(single), torch.device("cpu"), torch.float32).layers
    lora = random_lora(tmp_path / "xl.safetensors", layers, lambda n: "_transformer_blocks_" in n)
    rows = [row["block"] for row in analyse_json(cli, lora, "--model", single)["files"][0]["blocks"]]
    assert rows and all(SDXL.block_index_of(r) >= 0 for r in rows)

    write_flux_file(tmp_path / "flux.safetensors", FluxConfig(depth=2, depth_single=2))
    layers = load_denoiser(str(tmp_path / "flux.safetensors"), torch.device("cpu"), torch.float32).layers
    lora = random_lora(tmp_path / "flux_lora.safetensors", layers, lambda n: "_blocks_" in n)
    document = analyse_json(cli, lora, "--model", tmp_path / "flux.safetensors")
    assert [row["block"] for row in document["files"][0]["blocks"]] == ["D00", "D01", "S00", "S01"]


@pytest.fixture(scope="module")
def flux(tmp_path_factory):
    """A tiny FLUX.1-dev flow model file, its CLIP-L / T5 files and tokenizer folder, and a LoRA over all three."""
    from lr_weights.analysis.base_model import load_denoiser
    from lr_weights.analysis.flux_text import parse_flux_text_encoders
    from lr_weights.models.tiny_flux import FluxConfig

    from tests.lr_weights.analysis.models_on_disk import write_flux_text_encoders

    root = tmp_path_factory.mktemp("flux")
    config = FluxConfig(depth=2, depth_single=2)
    model = root / "flux.safetensors"
    write_flux_file(model, config)
    clip_l, t5xxl, tokenizers, _ = write_flux_text_encoders(root, config)
    text = parse_flux_text_encoders("flux", ["x"], str(clip_l), str(t5xxl), str(tokenizers), str(model))
    layers = load_denoiser(str(model), torch.device("cpu"), torch.float32, "flux", text).layers
    lora = random_lora(root / "flux_lora.safetensors", layers, lambda n: "_blocks_" in n or n.startswith("lora_te"))
    return model, lora, ["--clip-l", clip_l, "--t5xxl", t5xxl, "--tokenizer-dir", tokenizers]


def test_flux_prompts_give_its_text_encoders_their_rows(cli, flux):
    model, lora, encoders = flux
    document = analyse_json(cli, lora, "--model", model, *encoders, "--prompt", "a photo of a cat", "--prompt", "a dog")
    blocks = document["files"][0]["blocks"]
    assert [row["block"] for row in blocks] == ["TE1", "TE3", "D00", "D01", "S00", "S01"]
    assert all(row["share"] > 0 for row in blocks) and not document["files"][0]["notes"]
    # Without a prompt the text-encoder modules are named in the note, with or without the encoders loaded.
    for flags in (encoders, []):
        effect = analyse_json(cli, lora, "--model", model, *flags)["files"][0]
        assert [row["block"] for row in effect["blocks"]] == ["D00", "D01", "S00", "S01"]
        assert "(TE1, TE3) are not measured without --prompt" in effect["notes"][0]


@pytest.mark.parametrize("given, missing", [([], "--clip-l FILE and --t5xxl FILE"), (["--clip-l", "clip_l.safetensors"], "--t5xxl FILE")])
def test_flux_prompt_needs_the_text_encoders(cli, flux, no_loading, given, missing):
    model, lora, _ = flux
    line = error_line(cli("analyze", lora, "--model", model, "--prompt", "a cat", *given, *FAST))
    assert f"--prompt with a FLUX.1 model needs its text encoders: give {missing}" in line


def test_flux_text_encoders_with_another_model(cli, sd1, no_loading):
    line = error_line(cli("analyze", sd1[1], "--model", sd1[0], "--t5xxl", "t5xxl.safetensors", *FAST))
    assert "--t5xxl='t5xxl.safetensors' is not valid: expected no --t5xxl with a SD1 model" in line
