"""Each block's effect on the denoiser's output, measured on random samples (no images).

Samples: a random latent of the model's shape (N(0, 1), the scale of a noised latent at any
timestep), a timestep from `timesteps` points spread evenly over the schedule (the centres of equal
intervals; sample i takes point i mod T) and the conditioning of a prompt (the empty prompt unless
prompts are given; sample i takes prompt i mod P). The same samples, drawn from `seed`, serve every
row and every file, so rows and files are comparable. f is the model's own prediction (ε, v or flow).

With R the rows (blocks holding modules; text encoders too when prompts are given) and ΔW_b a
row's weight change:
    total     E‖f(W+ΔW) − f(W)‖² / E‖f(W)‖²
    ablation  e_b = E‖f(W+ΔW) − f(W+ΔW−ΔW_b)‖²  (reported / E‖f(W)‖²), share = e_b / Σ e
    alone     E‖f(W+ΔW_b) − f(W)‖²  (reported / E‖f(W)‖²)
f(W) is computed once per sample and serves every file. By default each forward holds one
configuration, its ΔW merged into the weights in place (swap.py); with batch_blocks=True several
configurations share a forward (forwards.py: the blocks' ablations side by side, ΔW added per batch
row by batched.py). Both compute the same f up to the order of floating-point sums; which is faster
depends on how full one configuration's samples keep the device (docs/analyze.md, Cost).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Dict, Iterable, List, Optional, Sequence, Tuple

import torch

from lr_weights.analysis.deltas import LoraDeltas
from lr_weights.analysis.denoiser import Conditioning, Denoiser
from lr_weights.analysis.forwards import FileForwards, auto_rows, configurations, even_rows, mean, out_of_memory_error
from lr_weights.analysis.swap import MergedWeights
from lr_weights.errors import NetworkArgError

Progress = Callable[[Iterable, Optional[int], str], Iterable]


@dataclass(frozen=True)
class MeasureSettings:
    samples: int = 16
    timesteps: int = 8
    seed: int = 0
    resolution: Optional[int] = None  # pixels; None: the model's default
    batch_size: Optional[int] = None  # rows (configuration x sample) per forward; None: from free memory (forwards.auto_rows)
    prompts: Tuple[str, ...] = ()
    batch_blocks: bool = False  # several configurations (blocks' ablations) per forward; False: one, merged in place


def parse_settings(samples="16", timesteps="8", seed="0", resolution=None, batch_size="auto", prompts: Sequence[str] = (), batch_blocks: bool = False) -> MeasureSettings:
    """Settings from the CLI's text (or numbers); errors name the flag."""
    from lr_weights.args.scalars import parse_int

    return MeasureSettings(
        samples=parse_int("--samples", samples, minimum=1),
        timesteps=parse_int("--timesteps", timesteps, minimum=1),
        seed=parse_int("--seed", seed, minimum=0),
        resolution=None if resolution is None else parse_int("--resolution", resolution, minimum=8),
        batch_size=_parse_batch_size(batch_size),
        prompts=tuple(prompts),
        batch_blocks=batch_blocks,
    )


def _parse_batch_size(value) -> Optional[int]:
    from lr_weights.args.scalars import parse_int

    if value is None or str(value).strip().lower() == "auto":
        return None
    try:
        return parse_int("--batch-size", value, minimum=1)
    except NetworkArgError:
        raise NetworkArgError("--batch-size", value, "a whole number >= 1 (batch rows per forward) or auto") from None


def check_settings(denoiser: Denoiser, settings: MeasureSettings, model_path: str = "the model") -> int:
    """The resolution to use; errors for what this model cannot do."""
    resolution = settings.resolution or denoiser.default_resolution
    step = denoiser.resolution_step
    if resolution % step:
        raise NetworkArgError("--resolution", resolution, f"a multiple of {step} for {denoiser.model.upper()} (its latent is halved {step.bit_length() - 4} times after the VAE's /8)")
    if settings.prompts and not denoiser.tokenizes:
        raise NetworkArgError("--prompt", settings.prompts[0], f"no --prompt with {model_path}: it has no tokenizer (a single-file checkpoint); give a diffusers folder, or leave --prompt out for the empty prompt")
    return resolution


@dataclass(frozen=True)
class Samples:
    latents: torch.Tensor
    timesteps: torch.Tensor
    prompt_index: torch.Tensor

    def __len__(self) -> int:
        return int(self.latents.shape[0])


def schedule_points(count: int, flow: bool) -> List[float]:
    """`count` timesteps at the centres of equal intervals of the schedule: (0, 1) for flow models,
    0..999 (whole steps) for SD's discrete schedule."""
    centres = [(k + 0.5) / count for k in range(count)]
    return centres if flow else [float(int(c * 1000)) for c in centres]


def draw_samples(denoiser: Denoiser, settings: MeasureSettings, resolution: int) -> Samples:
    """Latents from a CPU generator seeded with `seed`, so every device and dtype sees the same draw."""
    generator = torch.Generator().manual_seed(settings.seed)
    parameter = denoiser.parameter
    shape = (settings.samples,) + tuple(denoiser.latent_shape(resolution))
    latents = torch.randn(shape, generator=generator, dtype=torch.float32).to(parameter.device, parameter.dtype)
    points = schedule_points(settings.timesteps, denoiser.flow)
    timesteps = torch.tensor([points[i % len(points)] for i in range(settings.samples)], device=parameter.device)
    timesteps = timesteps.to(parameter.dtype) if denoiser.flow else timesteps.long()
    prompts = max(1, len(settings.prompts))
    prompt_index = torch.tensor([i % prompts for i in range(settings.samples)], device=parameter.device)
    return Samples(latents, timesteps, prompt_index)


@dataclass(frozen=True)
class BlockEffect:
    block: str
    index: Optional[int]  # flat block index; None for text encoders
    modules: int
    share: float  # e_b / Σ e
    ablation: float  # e_b / E‖f(W)‖²
    alone: float  # E‖f(W+ΔW_b) − f(W)‖² / E‖f(W)‖²
    norm: float  # ‖ΔW‖ over the row's modules (as `inspect`)


@dataclass(frozen=True)
class FileEffect:
    path: str
    model: str
    kind: str
    total: float  # E‖f(W+ΔW) − f(W)‖² / E‖f(W)‖²
    blocks: Tuple[BlockEffect, ...]
    notes: Tuple[str, ...] = ()


@dataclass(frozen=True)
class Analysis:
    model: str
    settings: MeasureSettings
    resolution: int
    base_power: float  # E‖f(W)‖²
    files: Tuple[FileEffect, ...] = field(default_factory=tuple)
    rows_per_forward: int = 0  # batch rows (configuration x sample) in each forward, as chosen


def squared_distance(a: torch.Tensor, b: Optional[torch.Tensor] = None) -> float:
    """E over samples of ‖a − b‖² (‖a‖² without b), summed in float64."""
    diff = a.double() if b is None else a.double() - b.double()
    return float(diff.pow(2).flatten(1).sum(1).mean())


def predict_all(denoiser: Denoiser, samples: Samples, cond: Conditioning, batch_size: int) -> torch.Tensor:
    """f on every sample, `batch_size` samples per forward; float32, on the model's device."""
    outputs = []
    try:
        with torch.no_grad():
            for start in range(0, len(samples), batch_size):
                part = slice(start, start + batch_size)
                index = samples.prompt_index[part]
                batch_cond = {key: value[index] for key, value in cond.items()}
                outputs.append(denoiser.predict(samples.latents[part], samples.timesteps[part], batch_cond).float())
    except RuntimeError as error:  # torch.cuda.OutOfMemoryError is a RuntimeError
        refusal = out_of_memory_error(error, denoiser.parameter.device, batch_size)
        if refusal is not None:
            raise refusal from None
        raise
    return torch.cat(outputs)


class _Conditioner:
    """The prompts' conditioning for the text-encoder rows now merged, each state encoded once."""

    def __init__(self, denoiser: Denoiser, prompts: Sequence[str]):
        self._denoiser = denoiser
        self._prompts = list(prompts) or [""]
        self._cache: Dict[frozenset, Conditioning] = {}

    def __call__(self, text_encoder_rows_on: frozenset) -> Conditioning:
        if text_encoder_rows_on not in self._cache:
            with torch.no_grad():
                self._cache[text_encoder_rows_on] = self._denoiser.encode(self._prompts)
        return self._cache[text_encoder_rows_on]


def measure(denoiser: Denoiser, files: Sequence[LoraDeltas], settings: MeasureSettings, progress: Optional[Progress] = None, model_path: str = "the model") -> Analysis:
    resolution = check_settings(denoiser, settings, model_path)
    samples = draw_samples(denoiser, settings, resolution)
    measure_text_encoders = bool(settings.prompts)
    plan = [(deltas, deltas.rows(measure_text_encoders)) for deltas in files]
    run = _measure_batched if settings.batch_blocks else _measure_merged
    base_power, results, rows_per_forward = run(denoiser, plan, samples, settings, progress)
    effects = tuple(_file_effect(deltas, rows, values, base_power, measure_text_encoders) for (deltas, rows), values in zip(plan, results))
    return Analysis(denoiser.model, settings, resolution, base_power, effects, rows_per_forward)


def _most_rows(denoiser: Denoiser, samples: Samples, cond: Conditioning, settings: MeasureSettings) -> int:
    if settings.batch_size is not None:
        return settings.batch_size
    return auto_rows(denoiser, samples.latents, samples.timesteps, {key: value[samples.prompt_index] for key, value in cond.items()})


def _measure_batched(denoiser: Denoiser, plan, samples: Samples, settings: MeasureSettings, progress: Optional[Progress]):
    """Configurations of several blocks per forward (forwards.py); the base rows go first."""
    from lr_weights.analysis.batched import BlockRowDeltas

    with torch.no_grad():
        base_cond = denoiser.encode(list(settings.prompts) or [""])
    streams = [FileForwards(denoiser, samples, deltas, rows, number == 0, settings.prompts, base_cond) for number, (deltas, rows) in enumerate(plan)]
    streams = streams or [FileForwards(denoiser, samples, None, (), True, settings.prompts, base_cond)]
    rows = even_rows(streams[0].total_rows, _most_rows(denoiser, samples, base_cond, settings))
    work = [(number, start) for number, stream in enumerate(streams) for start in range(0, stream.total_rows, rows)]
    iterator = progress(work, len(work), "analyze") if progress else work
    base: Dict[int, torch.Tensor] = {}
    full: Dict[int, torch.Tensor] = {}
    current, hooks = None, None
    try:
        for number, start in iterator:
            stream = streams[number]
            if number != current:
                if hooks is not None:
                    hooks.__exit__(None, None, None)
                hooks = BlockRowDeltas(denoiser.layers, stream.deltas, stream.unet_rows).__enter__() if stream.deltas is not None else None
                current, full = number, {}
            try:
                stream.run(start, rows, hooks, base, full)
            except RuntimeError as error:  # torch.cuda.OutOfMemoryError is a RuntimeError
                refusal = out_of_memory_error(error, denoiser.parameter.device, rows)
                if refusal is not None:
                    raise refusal from None
                raise
    finally:
        if hooks is not None:
            hooks.__exit__(None, None, None)
    base_power = mean(streams[0].distances[0])
    results = []
    for stream in streams[: len(plan)]:
        values: Dict[str, float] = {}
        for (kind, row, _), distances in zip(stream.configs, stream.distances):
            if kind != "base":
                values["total" if kind == "full" else f"{kind}:{row}"] = mean(distances)
        results.append(values)
    return base_power, results, rows


def _measure_merged(denoiser: Denoiser, plan, samples: Samples, settings: MeasureSettings, progress: Optional[Progress]):
    """One configuration per forward, its ΔW merged into the weights in place (swap.py)."""
    work: List[tuple] = [("base",)] + [(number, step) for number, (_, rows) in enumerate(plan) for step in configurations(rows)]
    iterator = progress(work, len(work), "analyze") if progress else work

    base_cond = _Conditioner(denoiser, settings.prompts)(frozenset())
    batch_size = min(len(samples), _most_rows(denoiser, samples, base_cond, settings))
    base = None
    base_power = 0.0
    full: Optional[torch.Tensor] = None
    current: Optional[Tuple[int, MergedWeights, _Conditioner, frozenset]] = None
    results: List[Dict[str, float]] = [{} for _ in plan]  # per file (the same path may come twice)
    try:
        for item in iterator:
            if item[0] == "base":
                base = predict_all(denoiser, samples, base_cond, batch_size)
                base_power = squared_distance(base)
                continue
            number, (kind, row, on) = item
            if current is None or current[0] != number:
                if current is not None:
                    current[1].restore()
                deltas, rows = plan[number]
                text_encoder_rows = frozenset(r for r in rows if not _is_block(deltas, r))
                current = (number, MergedWeights(denoiser.layers, deltas, rows), _Conditioner(denoiser, settings.prompts), text_encoder_rows)
            _, weights, conditioner, text_encoder_rows = current
            values = results[number]
            weights.set(on)
            out = predict_all(denoiser, samples, conditioner(on & text_encoder_rows), batch_size)
            if kind == "full":
                full = out
                values["total"] = squared_distance(out, base)
            elif kind == "ablation":
                values["ablation:" + row] = squared_distance(full, out)
            else:
                values["alone:" + row] = squared_distance(out, base)
    finally:
        if current is not None:
            current[1].restore()
    return base_power, results, batch_size


def _is_block(deltas: LoraDeltas, row: str) -> bool:
    return any(m.row == row and m.is_unet for m in deltas.modules)


def _file_effect(deltas: LoraDeltas, rows: Sequence[str], values: Dict[str, float], base_power: float, text_encoders: bool) -> FileEffect:
    relative = (lambda v: v / base_power) if base_power > 0 else (lambda v: 0.0)
    total_ablation = sum(values["ablation:" + r] for r in rows)
    blocks = []
    for row in rows:
        members = [m for m in deltas.modules if m.row == row]
        e = values["ablation:" + row]
        index = members[0].index if members[0].is_unet and members[0].row != "unknown" else None
        blocks.append(
            BlockEffect(row, index, len(members), e / total_ablation if total_ablation > 0 else 0.0, relative(e), relative(values["alone:" + row]), deltas.norms.get(row, 0.0))
        )
    notes = []
    left_out = sorted({m.row for m in deltas.modules if not m.is_unet} - set(rows))
    if left_out and not text_encoders:
        notes.append(f"text-encoder modules ({', '.join(left_out)}) are not measured without --prompt: the empty prompt's conditioning comes from the base text encoders")
    return FileEffect(deltas.path, deltas.model, deltas.kind, relative(values["total"]), tuple(blocks), tuple(notes))
