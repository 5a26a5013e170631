"""FLUX.1 with its text encoders (--clip-l, --t5xxl, tokenizers from local folders): the conditioning
is what sd-scripts feeds the flow model, and the LoRA's text-encoder modules get their own rows.

Tiny CLIP-L / T5 models and tokenizers are built in-process and saved as sd-scripts takes them
(models_on_disk.write_flux_text_encoders); the expected conditioning comes from those models as
built, not from the loader."""

import dataclasses

import pytest
import torch

from lr_weights.analysis.deltas import read_deltas
from lr_weights.analysis.measure import MeasureSettings, measure
from lr_weights.errors import NetworkArgError
from lr_weights.models.tiny_flux import FluxConfig

from .lora_files import edit_file, random_lora
from .models_on_disk import CLIP_L_FOLDER, EOS, write_flux_file, write_flux_text_encoders

pytest.importorskip("transformers")
pytest.importorskip("tokenizers")

SMALL = FluxConfig(depth=1, depth_single=2)
PROMPTS = ("a photo of a cat", "a red car on the road")
FEW = MeasureSettings(samples=2, timesteps=2, seed=0, batch_size=2, resolution=32, prompts=PROMPTS)


@pytest.fixture(scope="module")
def on_disk(tmp_path_factory):
    root = tmp_path_factory.mktemp("flux_text")
    write_flux_file(root / "dev.safetensors", SMALL)
    write_flux_file(root / "schnell.safetensors", dataclasses.replace(SMALL, guidance_embed=False))
    clip_l, t5xxl, tokenizers, built = write_flux_text_encoders(root, SMALL)
    return root, str(clip_l), str(t5xxl), str(tokenizers), built


def parse(on_disk, name="dev", prompts=PROMPTS, **flags):
    from lr_weights.analysis.flux_text import parse_flux_text_encoders

    root, clip_l, t5xxl, tokenizers, _ = on_disk
    given = {"clip_l": clip_l, "t5xxl": t5xxl, "tokenizer_dir": tokenizers, "max_tokens": None, **flags}
    return parse_flux_text_encoders("flux", prompts, given["clip_l"], given["t5xxl"], given["tokenizer_dir"], str(root / f"{name}.safetensors"), given["max_tokens"])


def load(on_disk, name="dev", with_text=True, **flags):
    from lr_weights.analysis.base_model import load_denoiser

    text = parse(on_disk, name, **flags) if with_text else None
    return load_denoiser(str(on_disk[0] / f"{name}.safetensors"), torch.device("cpu"), torch.float32, "flux", text)


@pytest.mark.parametrize("name, flags, tokens", [("dev", {}, 512), ("schnell", {}, 256), ("dev", {"max_tokens": "224"}, 224)])
def test_conditioning_is_t5_states_and_clip_pooled(on_disk, name, flags, tokens):
    import transformers

    _, _, _, tokenizers, (clip, t5) = on_disk
    denoiser = load(on_disk, name, **flags)
    with torch.no_grad():
        cond = denoiser.encode(list(PROMPTS))
        # The oracle: the encoders as built, tokenized as sd-scripts' FluxTokenizeStrategy does.
        t5_tokenizer = transformers.AutoTokenizer.from_pretrained(f"{tokenizers}/google_t5-v1_1-xxl", local_files_only=True)
        clip_tokenizer = transformers.CLIPTokenizer.from_pretrained(f"{tokenizers}/{CLIP_L_FOLDER}", local_files_only=True)
        t5_ids = t5_tokenizer(list(PROMPTS), max_length=tokens, padding="max_length", truncation=True, return_tensors="pt").input_ids
        clip_ids = clip_tokenizer(list(PROMPTS), max_length=77, padding="max_length", truncation=True, return_tensors="pt").input_ids
        states = t5(t5_ids).last_hidden_state
        # CLIP-L's pooled output: the final-norm state at the first end token (sd-scripts' config picks it by argmax).
        clip_states = clip(clip_ids).last_hidden_state
        pooled = clip_states[torch.arange(len(PROMPTS)), (clip_ids == EOS).int().argmax(-1)]
    assert cond["txt"].shape == (2, tokens, SMALL.context_in_dim) and cond["y"].shape == (2, SMALL.vec_in_dim)
    # The same model on the same input in the same process: the same kernels, so the same bits.
    assert torch.equal(cond["txt"], states) and torch.equal(cond["y"], pooled)
    assert cond["txt"].abs().amax() > 0 and cond["y"].abs().amax() > 0
    assert not torch.equal(cond["txt"][0], cond["txt"][1]) and not torch.equal(cond["y"][0], cond["y"][1])


def test_without_text_encoders_the_conditioning_is_zeros(on_disk):
    cond = load(on_disk, with_text=False).encode([""])
    assert not cond["txt"].any() and not cond["y"].any()


@pytest.fixture(scope="module")
def trained(on_disk):
    """A FLUX LoRA in sd-scripts' names over every layer: CLIP-L (lora_te1_), T5 (lora_te3_), flow model."""
    denoiser = load(on_disk)
    return denoiser, random_lora(on_disk[0] / "trained.safetensors", denoiser.layers, lambda name: True)


@pytest.mark.parametrize("batch_blocks", [False, True], ids=["merged", "block-batching"])
@pytest.mark.parametrize("encoder", ["TE1", "TE3"])
def test_only_one_text_encoder_nonzero_takes_the_whole_share(trained, tmp_path, encoder, batch_blocks):
    denoiser, path = trained
    single = edit_file(path, tmp_path / "single.safetensors", denoiser.arch, keep=[encoder])
    settings = dataclasses.replace(FEW, batch_blocks=batch_blocks)
    effect = measure(denoiser, [read_deltas(single, denoiser.layers, denoiser.arch, denoiser.model)], settings).files[0]
    shares = {b.block: b.share for b in effect.blocks}
    assert list(shares)[:2] == ["TE1", "TE3"] and len(shares) > 3  # text encoders first, then every block with modules
    # Every other row's ΔW is exactly 0: merged it is W0 bit for bit, re-encoding gives the same states,
    # so its ablation changes nothing and the one non-zero row holds all of Σe.
    assert shares[encoder] == 1.0
    assert all(share == 0.0 for row, share in shares.items() if row != encoder)
    row = next(b for b in effect.blocks if b.block == encoder)
    assert row.ablation == row.alone == effect.total > 0


def test_same_seed_same_numbers_from_a_fresh_load(trained, on_disk):
    denoiser, path = trained
    first = measure(denoiser, [read_deltas(path, denoiser.layers, denoiser.arch, denoiser.model)], FEW).files[0]
    fresh = load(on_disk)
    again = measure(fresh, [read_deltas(path, fresh.layers, fresh.arch, fresh.model)], FEW).files[0]
    assert first == again and first.total > 0
    assert {b.block for b in first.blocks} >= {"TE1", "TE3"} and all(b.share > 0 for b in first.blocks if b.block.startswith("TE"))


def test_text_encoder_modules_without_the_encoders_are_left_out(trained, on_disk):
    """No --clip-l/--t5xxl, no prompt: the file's text-encoder modules name no loaded layer; they
    are kept as rows the measure leaves out (with the note), not refused."""
    _, path = trained
    bare = load(on_disk, with_text=False)
    deltas = read_deltas(path, bare.layers, bare.arch, bare.model)
    effect = measure(bare, [deltas], dataclasses.replace(FEW, prompts=())).files[0]
    assert effect.blocks and all(not b.block.startswith("TE") for b in effect.blocks)
    assert "TE1, TE3" in effect.notes[0] and "not measured without --prompt" in effect.notes[0]
    assert set(deltas.norms) == {b.block for b in effect.blocks}  # no norm for modules without their encoder


# ---- refusals, before any model is loaded ---------------------------------------------------------


@pytest.mark.parametrize(
    "flags, expected",
    [
        ({"clip_l": None, "t5xxl": None}, "--prompt with a FLUX.1 model needs its text encoders: give --clip-l FILE and --t5xxl FILE"),
        ({"t5xxl": None}, "give --t5xxl FILE"),
        ({"tokenizer_dir": "nowhere"}, "--tokenizer-dir='nowhere' is not valid: expected an existing folder"),
        ({"max_tokens": "0"}, "--t5xxl-max-token-length='0' is not valid: expected a whole number >= 1"),
    ],
)
def test_refusals_name_the_flag(on_disk, flags, expected):
    with pytest.raises(ValueError) as error:
        parse(on_disk, **flags)
    assert expected in str(error.value)


def test_tokenizer_folder_without_the_tokenizer(on_disk, tmp_path):
    (tmp_path / CLIP_L_FOLDER).mkdir()
    with pytest.raises(NetworkArgError, match="google_t5-v1_1-xxl/"):
        parse(on_disk, tokenizer_dir=str(tmp_path))


def test_encoder_of_another_width(on_disk, tmp_path):
    from lr_weights.analysis.flux_text import parse_flux_text_encoders

    wider = dataclasses.replace(SMALL, vec_in_dim=SMALL.vec_in_dim + 8)
    write_flux_file(tmp_path / "wider.safetensors", wider)
    _, clip_l, t5xxl, tokenizers, _ = on_disk
    with pytest.raises(ValueError, match=r"--clip-l .* is 24 wide but the flow model .*vector_in takes 32"):
        parse_flux_text_encoders("flux", PROMPTS, clip_l, t5xxl, tokenizers, str(tmp_path / "wider.safetensors"))


def test_scaled_fp8_file_is_refused(on_disk, tmp_path):
    from safetensors.torch import load_file, save_file

    _, clip_l, _, _, _ = on_disk
    tensors = load_file(clip_l)
    tensors["text_model.final_layer_norm.scale_weight"] = torch.ones(1)
    save_file(tensors, str(tmp_path / "scaled.safetensors"))
    with pytest.raises(ValueError, match="--clip-l .*scaled.safetensors is a scaled fp8 file"):
        parse(on_disk, clip_l=str(tmp_path / "scaled.safetensors"))


def test_flux_flags_with_another_model():
    from lr_weights.analysis.flux_text import parse_flux_text_encoders

    with pytest.raises(NetworkArgError, match="--clip-l='c.safetensors' is not valid: expected no --clip-l with a SD1 model"):
        parse_flux_text_encoders("sd1", (), "c.safetensors", None, None)
    assert parse_flux_text_encoders("sd1", PROMPTS, None, None, None) is None
    assert parse_flux_text_encoders("flux", (), None, None, None) is None  # no prompt: zero conditioning
    with pytest.raises(NetworkArgError, match="--t5xxl-max-token-length='256' is not valid: expected no --t5xxl-max-token-length without --clip-l and --t5xxl"):
        parse_flux_text_encoders("flux", (), None, None, None, "flux.safetensors", "256")
