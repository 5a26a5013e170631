"""End-to-end harness: run the real kohya-ss/sd-scripts trainer on a tiny model.

This file is used in two ways:

* imported by the pytest tests (which only need the standard library), and
* executed as a script by the sd-scripts interpreter (``SD_SCRIPTS_PYTHON``)
  for everything that needs torch/diffusers/transformers::

      python sd_scripts_harness.py build-tokenizers OUT_DIR
      python sd_scripts_harness.py build-model {sd1,sdxl} OUT_DIR
      python sd_scripts_harness.py build-dataset OUT_DIR
      python sd_scripts_harness.py compare A.safetensors B.safetensors

Nothing here is copied from sd-scripts.  The trainer itself is started through
``run_sd_scripts.py`` (next to this file), which shrinks sd-scripts' hard-coded
U-Net widths before the training script is executed, so that an SD1 or SDXL
U-Net with the *real block structure* (same module names, same number of
blocks/layers/transformer depths, hence the same LoRA keys) fits in a few
hundred MB and trains in seconds on a CPU.

No model hub is used: the model folders are randomly initialised diffusers
folders and the CLIP tokenizers are built from the BPE vocabulary shipped in
the ``open_clip_torch`` package.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, Dict, List, Mapping, Optional, Sequence, Tuple

HERE = Path(__file__).resolve().parent
REPO_ROOT = HERE.parent.parent
RUNNER = HERE / "run_sd_scripts.py"

# ---------------------------------------------------------------------------
# Tiny architecture.  These numbers must agree between the diffusers folders
# built below and the constants patched into sd-scripts by run_sd_scripts.py.
# ---------------------------------------------------------------------------
# SD1: sd-scripts' original_unet hard-codes (320, 640, 1280, 1280).
SD1_BLOCK_OUT_CHANNELS = (32, 64, 64, 64)
SD1_TE_HIDDEN = 64  # == U-Net cross_attention_dim
SD1_TE_LAYERS = 2
# SDXL: sd-scripts' sdxl_original_unet hard-codes MODEL_CHANNELS=320 (patched)
# and a literal cross_attention_dim=2048 (not patchable), so the two text
# encoders keep their real widths 768 + 1280 (and TE2's 1280-d projection, so
# ADM_IN_CHANNELS stays 2816) but are shallow.  Transformer depths (1/2/10),
# 64-channel heads, etc. stay as upstream.
SDXL_MODEL_CHANNELS = 64
SDXL_TE1_HIDDEN = 768
SDXL_TE1_LAYERS = 12  # sd-scripts reads hidden_states[11] of text encoder 1
SDXL_TE2_HIDDEN = 1280
SDXL_TE2_LAYERS = 2  # sd-scripts reads hidden_states[-2] of text encoder 2
SDXL_TE2_PROJ = 1280
SDXL_CONTEXT_DIM = SDXL_TE1_HIDDEN + SDXL_TE2_HIDDEN  # must be 2048
SDXL_ADM_IN_CHANNELS = SDXL_TE2_PROJ + 6 * 256  # 2816 as upstream

# sd-scripts looks for  <tokenizer_cache_dir>/<hub id with "/" -> "_">
TOKENIZER1_DIRNAME = "openai_clip-vit-large-patch14"
TOKENIZER2_DIRNAME = "laion_CLIP-ViT-bigG-14-laion2B-39B-b160k"

RESOLUTION = 64


def patch_spec(arch: str) -> Dict[str, object]:
    """Module-level constants of sd-scripts to override before training."""
    if arch == "sd1":
        c = SD1_BLOCK_OUT_CHANNELS
        return {
            "library.original_unet": {
                "BLOCK_OUT_CHANNELS": list(c),
                "TIMESTEP_INPUT_DIM": c[0],
                "TIME_EMBED_DIM": c[0] * 4,
            }
        }
    if arch == "sdxl":
        return {
            "library.sdxl_original_unet": {
                "MODEL_CHANNELS": SDXL_MODEL_CHANNELS,
                "TIME_EMBED_DIM": SDXL_MODEL_CHANNELS * 4,
            }
        }
    raise ValueError(arch)


# ---------------------------------------------------------------------------
# Pieces that run inside the sd-scripts interpreter (need torch & friends)
# ---------------------------------------------------------------------------
def _bytes_to_unicode() -> Dict[int, str]:
    # The standard GPT-2/CLIP reversible byte <-> unicode table.
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, [chr(x) for x in cs]))


def build_tokenizers(out_dir: Path) -> Path:
    """Write CLIP tokenizers (real 49408-token BPE vocabulary) into a
    sd-scripts --tokenizer_cache_dir layout.  Returns the cache dir."""
    import gzip

    import open_clip
    from transformers import CLIPTokenizer

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    raw = out_dir / "_raw_bpe"
    raw.mkdir(exist_ok=True)
    bpe_path = Path(open_clip.__file__).parent / "bpe_simple_vocab_16e6.txt.gz"
    lines = gzip.open(bpe_path).read().decode("utf-8").split("\n")
    merges = lines[1 : 49152 - 256 - 2 + 1]
    merge_pairs = [tuple(m.split()) for m in merges]
    vocab = list(_bytes_to_unicode().values())
    vocab = vocab + [v + "</w>" for v in vocab]
    vocab += ["".join(p) for p in merge_pairs]
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    assert len(vocab) == 49408, len(vocab)
    (raw / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(vocab)}, ensure_ascii=False))
    (raw / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8")

    common = dict(
        vocab_file=str(raw / "vocab.json"),
        merges_file=str(raw / "merges.txt"),
        bos_token="<|startoftext|>",
        eos_token="<|endoftext|>",
        unk_token="<|endoftext|>",
        model_max_length=77,
    )
    tok1 = CLIPTokenizer(pad_token="<|endoftext|>", **common)
    tok1.save_pretrained(str(out_dir / TOKENIZER1_DIRNAME))
    tok2 = CLIPTokenizer(pad_token="!", **common)
    tok2.save_pretrained(str(out_dir / TOKENIZER2_DIRNAME))
    ids = tok1("a photo of a cat").input_ids
    assert ids[0] == 49406 and ids[-1] == 49407 and len(ids) == 7, ids
    return out_dir


def _tiny_vae():
    from diffusers import AutoencoderKL

    # 3 downsamplings -> latent = image / 8, 4 latent channels, as in SD.
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=(32, 32, 32, 32),
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=32,
        sample_size=RESOLUTION,
    )


def _clip_config(hidden: int, layers: int, act: str, proj: Optional[int] = None):
    from transformers import CLIPTextConfig

    return CLIPTextConfig(
        vocab_size=49408,
        hidden_size=hidden,
        intermediate_size=hidden * 4,
        num_hidden_layers=layers,
        num_attention_heads=2,
        max_position_embeddings=77,
        hidden_act=act,
        projection_dim=proj if proj is not None else hidden,
        bos_token_id=49406,
        eos_token_id=49407,
        pad_token_id=1,
    )


def build_model(arch: str, out_dir: Path, tokenizer_dir: Path, seed: int = 0) -> Path:
    """Save a randomly initialised diffusers model folder for ``arch``."""
    import torch
    from transformers import CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

    torch.manual_seed(seed)
    out_dir = Path(out_dir)
    tok1 = CLIPTokenizer.from_pretrained(str(Path(tokenizer_dir) / TOKENIZER1_DIRNAME))
    vae = _tiny_vae()

    if arch == "sd1":
        from diffusers import PNDMScheduler, StableDiffusionPipeline, UNet2DConditionModel

        unet = UNet2DConditionModel(
            sample_size=RESOLUTION // 8,
            in_channels=4,
            out_channels=4,
            down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
            up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
            block_out_channels=SD1_BLOCK_OUT_CHANNELS,
            layers_per_block=2,
            cross_attention_dim=SD1_TE_HIDDEN,
            attention_head_dim=8,
            norm_num_groups=32,
        )
        te = CLIPTextModel(_clip_config(SD1_TE_HIDDEN, SD1_TE_LAYERS, "quick_gelu"))
        sched = PNDMScheduler(
            beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", num_train_timesteps=1000, skip_prk_steps=True
        )
        pipe = StableDiffusionPipeline(
            vae=vae,
            text_encoder=te,
            tokenizer=tok1,
            unet=unet,
            scheduler=sched,
            safety_checker=None,
            feature_extractor=None,
            requires_safety_checker=False,
        )
    elif arch == "sdxl":
        from diffusers import EulerDiscreteScheduler, StableDiffusionXLPipeline, UNet2DConditionModel

        c = SDXL_MODEL_CHANNELS
        # Same layout as SDXL base (DownBlock2D + 2 cross-attn levels,
        # transformer depths 1/2/10 -> here [_, 2, 10], linear projection,
        # 64-channel heads, text_time addition embedding), narrower.
        unet = UNet2DConditionModel(
            sample_size=RESOLUTION // 8,
            in_channels=4,
            out_channels=4,
            down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
            block_out_channels=(c, 2 * c, 4 * c),
            layers_per_block=2,
            transformer_layers_per_block=(1, 2, 10),
            attention_head_dim=(c // 64, 2 * c // 64, 4 * c // 64),
            cross_attention_dim=SDXL_CONTEXT_DIM,
            use_linear_projection=True,
            addition_embed_type="text_time",
            addition_time_embed_dim=256,
            projection_class_embeddings_input_dim=SDXL_ADM_IN_CHANNELS,
            norm_num_groups=32,
        )
        te1 = CLIPTextModel(_clip_config(SDXL_TE1_HIDDEN, SDXL_TE1_LAYERS, "quick_gelu"))
        te2 = CLIPTextModelWithProjection(_clip_config(SDXL_TE2_HIDDEN, SDXL_TE2_LAYERS, "gelu", SDXL_TE2_PROJ))
        tok2 = CLIPTokenizer.from_pretrained(str(Path(tokenizer_dir) / TOKENIZER2_DIRNAME))
        sched = EulerDiscreteScheduler(
            beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", num_train_timesteps=1000
        )
        pipe = StableDiffusionXLPipeline(
            vae=vae,
            text_encoder=te1,
            text_encoder_2=te2,
            tokenizer=tok1,
            tokenizer_2=tok2,
            unet=unet,
            scheduler=sched,
        )
    else:
        raise ValueError(arch)
    pipe.save_pretrained(str(out_dir))
    return out_dir


def build_dataset(out_dir: Path, n_images: int = 4, seed: int = 0) -> Path:
    """kohya 'DreamBooth' layout: <out_dir>/1_subject/{i}.png + {i}.txt"""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    sub = Path(out_dir) / "1_subject"
    sub.mkdir(parents=True, exist_ok=True)
    captions = ["a photo of a cat", "a red car on a road", "a painting of a tree", "a dog in the snow"]
    for i in range(n_images):
        arr = rng.integers(0, 256, size=(RESOLUTION, RESOLUTION, 3), dtype=np.uint8)
        Image.fromarray(arr).save(sub / f"img{i}.png")
        (sub / f"img{i}.txt").write_text(captions[i % len(captions)])
    return Path(out_dir)


def compare_files(a: str, b: str) -> dict:
    """Tensor-by-tensor comparison of two safetensors files."""
    from safetensors import safe_open

    with safe_open(a, "pt") as fa, safe_open(b, "pt") as fb:
        ka, kb = set(fa.keys()), set(fb.keys())
        diffs = {}
        shape_mismatch = {}
        for k in sorted(ka & kb):
            ta, tb = fa.get_tensor(k), fb.get_tensor(k)
            if ta.shape != tb.shape or ta.dtype != tb.dtype:
                shape_mismatch[k] = [str(tuple(ta.shape)), str(ta.dtype), str(tuple(tb.shape)), str(tb.dtype)]
                continue
            diffs[k] = float((ta.double() - tb.double()).abs().max()) if ta.numel() else 0.0
        meta_a, meta_b = fa.metadata() or {}, fb.metadata() or {}
    worst = sorted(diffs.items(), key=lambda kv: -kv[1])
    return {
        "n_keys_a": len(ka),
        "n_keys_b": len(kb),
        "only_in_a": sorted(ka - kb),
        "only_in_b": sorted(kb - ka),
        "shape_or_dtype_mismatch": shape_mismatch,
        "max_abs_diff": worst[0][1] if worst else 0.0,
        "n_keys_differing": sum(1 for _, d in worst if d > 0),
        "worst": worst[:20],
        "metadata_diff": {
            k: [meta_a.get(k), meta_b.get(k)]
            for k in sorted(set(meta_a) | set(meta_b))
            if meta_a.get(k) != meta_b.get(k) and k not in ("ss_training_started_at", "ss_training_finished_at", "ss_output_name")
        },
    }


# ---------------------------------------------------------------------------
# Driver side (standard library only)
# ---------------------------------------------------------------------------
def sd_scripts_dir() -> Optional[Path]:
    d = os.environ.get("SD_SCRIPTS_DIR")
    return Path(d).resolve() if d else None


def sd_python() -> str:
    return os.environ.get("SD_SCRIPTS_PYTHON") or sys.executable


def workdir(tmp_path_factory, name: str) -> Path:
    """Where a test module's models and outputs go: LRW_E2E_WORKDIR (reused between runs), else a
    fresh pytest temporary folder called `name`."""
    root = os.environ.get("LRW_E2E_WORKDIR")
    return Path(root) if root else tmp_path_factory.mktemp(name)


def candidate_origin(module: str, sd_dir: Path, env: dict) -> Tuple[str, str]:
    """(the file `module` resolves to for the trainer's interpreter, with the trainer's path and working
    directory, or "" if it does not; the lookup's stderr)."""
    code = f"import importlib.util; s = importlib.util.find_spec({module!r}); print(s.origin if s else '')"
    out = subprocess.run([sd_python(), "-c", code], env=env, cwd=str(sd_dir), capture_output=True, text=True)
    return out.stdout.strip(), out.stderr.strip()


def _env(sd_dir: Path) -> dict:
    env = dict(os.environ)
    paths = [str(sd_dir), str(REPO_ROOT)]
    if env.get("PYTHONPATH"):
        paths.append(env["PYTHONPATH"])
    env["PYTHONPATH"] = os.pathsep.join(paths)
    env.update(
        HF_HUB_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
        HF_DATASETS_OFFLINE="1",
        DIFFUSERS_OFFLINE="1",
        TOKENIZERS_PARALLELISM="false",
        CUDA_VISIBLE_DEVICES="",
        PYTHONHASHSEED="0",
        COLUMNS="200",  # wider rich log lines
        # One thread per trainer: same math in every run, and on a busy 2-core machine
        # two OpenMP threads per process made SDXL steps ~7x slower (spin-waiting).
        OMP_NUM_THREADS=env.get("LRW_E2E_THREADS", "1"),
        MKL_NUM_THREADS=env.get("LRW_E2E_THREADS", "1"),
    )
    return env


def _run(cmd: List[str], sd_dir: Path, env: dict, log: Optional[Path] = None) -> None:
    """Run `cmd` in the sd-scripts checkout; the output goes to `log`, its tail into the error."""
    proc = subprocess.run(cmd, cwd=str(sd_dir), env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if log is not None:
        log.write_text(proc.stdout)
    if proc.returncode != 0:
        # Long --network_args (one regex per block) would bury the output tail: the command is cut.
        raise RuntimeError(f"command failed ({proc.returncode}): {' '.join(cmd)[:2000]}\n--- output tail ---\n{proc.stdout[-8000:]}")


def common_train_args(
    dataset: Path, resolution: int, out_dir: Path, out_name: str, network_module: str, seed: int, steps: int, learning_rate: float
) -> List[str]:
    """The trainer arguments every tiny-model run shares (fp32, one image a step, AdamW, dim 4 / alpha 1)."""
    return [
        "--train_data_dir", str(dataset),
        "--resolution", str(resolution),
        "--output_dir", str(out_dir),
        "--output_name", out_name,
        "--save_model_as", "safetensors",
        "--save_precision", "float",
        "--mixed_precision", "no",
        "--seed", str(seed),
        "--max_train_steps", str(steps),
        "--train_batch_size", "1",
        "--network_module", network_module,
        "--network_dim", "4",
        "--network_alpha", "1",
        "--optimizer_type", "AdamW",
        "--learning_rate", repr(learning_rate),
        "--lr_scheduler", "constant",
        "--max_data_loader_n_workers", "0",
        "--caption_extension", ".txt",
        "--cache_latents",
    ]


class TinyWorkspace:
    """Tokenizer cache + dataset + tiny model files under ``root`` (built lazily by ``harness``, run
    under the sd-scripts interpreter), training runs under ``root/out`` and their comparisons."""

    harness = Path(__file__).resolve()  # the script run for build-* and compare

    def __init__(self, root: Path, sd_dir: Optional[Path] = None):
        self.root = Path(root)
        self.sd_dir = Path(sd_dir) if sd_dir else sd_scripts_dir()
        if self.sd_dir is None:
            raise RuntimeError("SD_SCRIPTS_DIR is not set")
        self.tokenizers = self.root / "tokenizers"
        self.dataset = self.root / "data"

    def env(self) -> dict:
        return _env(self.sd_dir)

    def call_harness(self, args: Sequence[str]) -> None:
        _run([sd_python(), str(self.harness), *args], self.sd_dir, self.env())

    def ensure_tokenizers_and_dataset(self, last_tokenizer: str) -> None:
        if not (self.tokenizers / last_tokenizer).exists():
            self.call_harness(["build-tokenizers", str(self.tokenizers)])
        if not (self.dataset / "1_subject").exists():
            self.call_harness(["build-dataset", str(self.dataset)])

    def run_trainer(self, cmd: List[str], out_dir: Path, out_name: str, network_module: str, network_args: Sequence[str]) -> Path:
        """Run a trainer command line; check where the network module came from; return the saved file."""
        if network_args:
            cmd = cmd + ["--network_args", *network_args]
        t0 = time.time()
        _run(cmd, self.sd_dir, self.env(), log=out_dir / "train.log")
        (out_dir / "elapsed_s.txt").write_text(f"{time.time() - t0:.1f}\n")
        log_text = (out_dir / "train.log").read_text()
        origin = next((l.split(" -> ", 1)[1] for l in log_text.splitlines() if l.startswith("LRW_E2E_NETWORK_MODULE")), None)
        (out_dir / "network_module_origin.txt").write_text(f"{origin}\n")
        if network_module.startswith("networks.") and not (origin and Path(origin).resolve().is_relative_to(self.sd_dir)):
            raise RuntimeError(f"{network_module} resolved to {origin}, not inside {self.sd_dir}")
        path = out_dir / f"{out_name}.safetensors"
        if not path.exists():
            raise RuntimeError(f"trainer finished but {path} is missing; see {out_dir / 'train.log'}")
        return path

    def network_module_origin(self, out_name: str) -> str:
        return (self.root / "out" / out_name / "network_module_origin.txt").read_text().strip()

    def compare(self, a: Path, b: Path) -> dict:
        out = self.root / "out" / f"cmp_{Path(a).stem}__{Path(b).stem}.json"
        self.call_harness(["compare", str(a), str(b), str(out)])
        return json.loads(out.read_text())


class Workspace(TinyWorkspace):
    """The tiny SD1 and SDXL models, trained by train_network.py / sdxl_train_network.py."""

    def __init__(self, root: Path, sd_dir: Optional[Path] = None):
        super().__init__(root, sd_dir)
        self.models = {"sd1": self.root / "model_sd1", "sdxl": self.root / "model_sdxl"}

    def ensure(self, arch: str) -> None:
        self.ensure_tokenizers_and_dataset(TOKENIZER2_DIRNAME)
        if not (self.models[arch] / "model_index.json").exists():
            self.call_harness(["build-model", arch, str(self.models[arch]), str(self.tokenizers)])

    def train(
        self,
        arch: str,
        network_module: str,
        network_args: Sequence[str] = (),
        out_name: str = "lora",
        seed: int = 42,
        steps: int = 3,
        extra_args: Sequence[str] = (),
    ) -> Path:
        """Run sd-scripts' trainer; return the saved LoRA .safetensors path."""
        self.ensure(arch)
        script = "train_network.py" if arch == "sd1" else "sdxl_train_network.py"
        out_dir = self.root / "out" / out_name
        out_dir.mkdir(parents=True, exist_ok=True)
        cmd = [
            sd_python(),
            str(RUNNER),
            "--patch-json",
            json.dumps(patch_spec(arch)),
            "--",
            str(self.sd_dir / script),
            "--pretrained_model_name_or_path", str(self.models[arch]),
            "--tokenizer_cache_dir", str(self.tokenizers),
            *common_train_args(self.dataset, RESOLUTION, out_dir, out_name, network_module, seed, steps, 1e-3),
            *extra_args,
        ]
        return self.run_trainer(cmd, out_dir, out_name, network_module, network_args)


def assert_same_files(ws: TinyWorkspace, a: Path, b: Path, label: str) -> Tuple[dict, str]:
    """Compare two saved files: non-empty, the same keys, shapes and dtypes; (comparison, its detail)."""
    res = ws.compare(a, b)
    detail = json.dumps(
        {k: res[k] for k in ("only_in_a", "only_in_b", "shape_or_dtype_mismatch", "max_abs_diff", "n_keys_differing", "worst")},
        indent=1,
    )
    report = os.environ.get("LRW_E2E_REPORT")
    if report:  # one JSON line per comparison, for the figures of a change's note
        with open(report, "a", encoding="utf-8") as out:
            out.write(json.dumps({"case": label, "max_abs_diff": res["max_abs_diff"], "keys": res["n_keys_a"]}) + "\n")
    if not res["n_keys_a"] > 0:
        raise AssertionError(f"{label}: empty LoRA file {a}")
    if res["only_in_a"] or res["only_in_b"]:
        raise AssertionError(f"{label}: key sets differ\n{detail}")
    if res["shape_or_dtype_mismatch"]:
        raise AssertionError(f"{label}: shape/dtype mismatch\n{detail}")
    return res, detail


def run_command_line(argv: List[str], builders: Mapping[str, Callable[..., object]], compare: Callable[[str, str], dict]) -> None:
    """`compare A B [OUT.json]`, or one of `builders` with the remaining words as its arguments."""
    cmd, rest = argv[0], argv[1:]
    if cmd == "compare":
        text = json.dumps(compare(rest[0], rest[1]), indent=1)
        if len(rest) > 2:
            Path(rest[2]).write_text(text)
        else:
            print(text)
    elif cmd in builders:
        builders[cmd](*rest)
    else:
        raise SystemExit(f"unknown command {cmd}")


def _main(argv: List[str]) -> None:
    builders = {
        "build-tokenizers": lambda out: build_tokenizers(Path(out)),
        "build-model": lambda arch, out, tokenizers: build_model(arch, Path(out), Path(tokenizers)),
        "build-dataset": lambda out: build_dataset(Path(out)),
    }
    run_command_line(argv, builders, compare_files)


if __name__ == "__main__":
    _main(sys.argv[1:])
