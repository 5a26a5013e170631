"""Recorded upstream figures of a DiT family (tests/fixtures/upstream/<family>/) and our entry point
run the way the recorder ran upstream's (network_recording.py): what the FLUX, Anima, HunyuanImage,
SD3 and Lumina parity tests share.

The tiny models are rebuilt from the recorded skeletons, so no sd-scripts import is needed.
Same-seed equality is checked against an in-process replay of upstream's init calls (the uniform
kernels differ between CPU capabilities), and against the recorded hashes where this CPU draws
what the recording one drew.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import tempfile
from functools import lru_cache
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

import torch

from lr_weights.models.skeleton import build_from_skeleton

UPSTREAM = Path(__file__).resolve().parent / "fixtures" / "upstream"

SKIP_OTHER_CPU = (
    "this CPU's uniform kernels (ATEN_CPU_CAPABILITY) draw other values from the same seed than the recording "
    "machine's; same-seed equality is checked against the in-process replay of upstream's init calls instead"
)


def sha256(tensor: torch.Tensor) -> str:
    return hashlib.sha256(tensor.detach().float().contiguous().numpy().tobytes()).hexdigest()


def replay_init(seed: int, modules: Sequence[dict], ggpo: bool = False) -> List:
    """The initial lora_down hashes upstream's calls give on THIS machine: for each recorded module
    in order its down and up layers are constructed (each draws its own init; a split module
    constructs every down, then every up; a k x k conv module (SD3's x_embedder) a Conv2d down and a
    1x1 Conv2d up), then kaiming_uniform_(a=sqrt(5)) on the downs, and with GGPO one randperm over
    the base layer's rows. The uniform kernels differ between CPU capabilities (ATEN_CPU_CAPABILITY),
    so the recorded hashes hold on CPUs like the recording one; the replay holds on every CPU."""
    torch.manual_seed(seed)
    hashes: List = []
    for module in modules:
        if "split_dims" in module:
            assert not ggpo  # no recorded case has both
            downs = [torch.nn.Linear(shape[1], shape[0], bias=False) for shape in module["down_shapes"]]
            for shape in module["up_shapes"]:
                torch.nn.Linear(shape[1], shape[0], bias=False)
            for down in downs:
                torch.nn.init.kaiming_uniform_(down.weight, a=math.sqrt(5))
            hashes.append([sha256(d.weight) for d in downs])
            continue
        down_shape, up_shape = module["down_shape"], module["up_shape"]
        if len(down_shape) == 4:
            down = torch.nn.Conv2d(down_shape[1], down_shape[0], tuple(down_shape[2:]), bias=False)
            torch.nn.Conv2d(up_shape[1], up_shape[0], 1, bias=False)
        else:
            down = torch.nn.Linear(down_shape[1], down_shape[0], bias=False)
            torch.nn.Linear(up_shape[1], up_shape[0], bias=False)
        torch.nn.init.kaiming_uniform_(down.weight, a=math.sqrt(5))
        if ggpo:
            torch.randperm(up_shape[0])
        hashes.append(sha256(down.weight))
    return hashes


def replay_case(spec: dict) -> tuple:
    """replay_init of a recorded case: its seed, its modules, GGPO when its args turn it on."""
    ggpo = "ggpo_beta" in spec["network_args"] and "ggpo_sigma" in spec["network_args"]
    return tuple(replay_init(spec["seed"], spec["result"]["modules"], ggpo))


def down_hashes(network) -> List:
    """Per module, the hash of its initial lora_down (a list of hashes for a split module)."""
    return [sha256(m.lora_down.weight) if getattr(m, "split_dims", None) is None else [sha256(d.weight) for d in m.lora_down] for m in network.all_loras]


def create(module, spec: dict, text_encoders, model, network_args: Optional[Dict[str, str]] = None):
    """The host call as the recorder made it: a seed, create_network, apply_to (`network_args`
    override the case's). SD3-format figures (no `apply_text_encoder`: their host always applies to
    the encoders) were recorded as train_network.py calls, with `dropout` among the kwargs unless
    the case says otherwise."""
    args = dict(spec["network_args"] if network_args is None else network_args)
    if "apply_text_encoder" not in spec and spec.get("host_dropout_kwarg", True):
        args.setdefault("dropout", spec["neuron_dropout"])
    torch.manual_seed(spec["seed"])
    network = module.create_network(1.0, spec["network_dim"], spec["network_alpha"], None, text_encoders, model, neuron_dropout=spec["neuron_dropout"], **args)
    network.apply_to(text_encoders, model, spec.get("apply_text_encoder", True), True)
    return network


class Figures:
    """One family's recorded cases and our entry point run on them, the way upstream was run."""

    def __init__(self, family: str, entry_point=None, models: Optional[Callable[["Figures", dict], tuple]] = None, init_from: Dict[str, str] = None):
        """`entry_point` and `models` (spec -> text encoders, model) for create/built; `init_from`:
        cases whose modules were drawn as part of another case's (apply_to without the text encoder
        drops modules that were created, and drew, first): slug -> that case."""
        self.init_from = dict(init_from or {})
        self.folder = UPSTREAM / family
        self.entry_point = entry_point
        self._models = models
        self.slugs = sorted(p.stem for p in (self.folder / "cases").glob("*.json"))
        self.bad_inputs = json.loads((self.folder / "bad_inputs.json").read_text(encoding="utf-8"))
        self.case = lru_cache(maxsize=None)(self._case)
        self.skeleton = lru_cache(maxsize=None)(self._skeleton)
        self.built = lru_cache(maxsize=None)(self._built)
        self.replayed_init = lru_cache(maxsize=None)(self._replayed_init)

    def _case(self, slug: str) -> dict:
        return json.loads((self.folder / "cases" / f"{slug}.json").read_text(encoding="utf-8"))

    def _skeleton(self, name: str) -> dict:
        return json.loads((self.folder / "skeletons" / f"{name}.json").read_text(encoding="utf-8"))

    def model(self, name: str):
        return build_from_skeleton(self.skeleton(name), "cpu")

    def create(self, spec: dict, network_args: Dict[str, str] = None):
        """Our entry point on the case's tiny models, called as the recorder called upstream's."""
        encoders, dit = self._models(self, spec)
        return create(self.entry_point, spec, encoders, dit, network_args)

    def groups_of(self, spec: dict, network):
        return network.prepare_optimizer_params_with_multiple_te_lrs(spec["text_encoder_lr"], spec["unet_lr"], spec["learning_rate"])

    def _built(self, slug: str):
        spec = self.case(slug)
        network = self.create(spec)
        groups, descriptions = self.groups_of(spec, network)
        return spec, network, groups, descriptions

    def _replayed_init(self, slug: str) -> tuple:
        """replay_init of the case (of its source case's modules, for init_from cases)."""
        if slug in self.init_from:
            source = self.init_from[slug]
            by_name = dict(zip((m["name"] for m in self.case(source)["result"]["modules"]), self.replayed_init(source)))
            return tuple(by_name[m["name"]] for m in self.case(slug)["result"]["modules"])
        return replay_case(self.case(slug))

    def recorded_draws_hold_here(self, slug: str) -> bool:
        return list(self.replayed_init(slug)) == [m["down_sha256"] for m in self.case(slug)["result"]["modules"]]


# ---- comparisons ---------------------------------------------------------------------------------


def assert_modules_match(network, result: dict, replayed: tuple) -> None:
    """Names in creation order, dims, alphas, shapes, dropouts, same-seed initial downs (replayed)."""
    got = network.all_loras
    want = result["modules"]
    assert [m.lora_name for m in got] == [m["name"] for m in want]
    for module, figure in zip(got, want):
        assert module.lora_dim == figure["dim"] and float(module.alpha) == figure["alpha"], module.lora_name
        assert list(module.lora_down.weight.shape) == figure["down_shape"], module.lora_name
        assert list(module.lora_up.weight.shape) == figure["up_shape"], module.lora_name
        for key in ("dropout", "rank_dropout", "module_dropout"):
            assert getattr(module, key) == figure.get(key), (module.lora_name, key)
    assert tuple(sha256(m.lora_down.weight) for m in got) == replayed


def lrs_by_name(network, groups) -> dict:
    names = {id(p): n for n, p in network.named_parameters()}
    return {names[id(p)]: g["lr"] for g in groups for p in g["params"]}


def upstream_lrs_by_name(result: dict) -> dict:
    """Upstream's parameter list is, per module in creation order, lora_down.weight then lora_up.weight
    (a split module: every lora_down.<i>.weight, then every lora_up.<i>.weight)."""

    def names(module: dict) -> List[str]:
        if "split_dims" not in module:
            return [f"{module['name']}.{part}.weight" for part in ("lora_down", "lora_up")]
        parts = range(len(module["down_shapes"]))
        return [f"{module['name']}.{part}.{i}.weight" for part in ("lora_down", "lora_up") for i in parts]

    ordered = [name for module in result["modules"] for name in names(module)]
    return {ordered[i]: g["lr"] for g in result["groups"] for first, last in g["param_index_ranges"] for i in range(first, last + 1)}


def assert_groups_match(network, groups: List[dict], descriptions: List[str], result: dict) -> None:
    """Per-parameter LRs, group order, descriptions and sizes."""
    assert lrs_by_name(network, groups) == upstream_lrs_by_name(result)
    assert descriptions == [" ".join(g["description"].split()) for g in result["groups"]]
    assert [len(list(g["params"])) for g in groups] == [g["n_tensors"] for g in result["groups"]]


def state_sha256(state: Dict[str, torch.Tensor], keys: Optional[Sequence[str]] = None) -> str:
    """sha256 over (key, float32 bytes) in `keys`' order (default: the state's), as the recorder
    hashes upstream's."""
    digest = hashlib.sha256()
    for key in state if keys is None else keys:
        digest.update(key.encode("utf-8"))
        digest.update(state[key].detach().float().contiguous().numpy().tobytes())
    return digest.hexdigest()


def assert_file_matches(network, result: dict) -> None:
    """state_dict keys, order and tensors (one digest), the saved file's keys and upstream's hashes."""
    state = network.state_dict()
    assert len(state) == result["state_dict"]["n_keys"]
    assert state_sha256(state) == result["state_dict"]["sha256_all"]
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "lora.safetensors")
        network.save_weights(path, None, {})
        from safetensors import safe_open

        with safe_open(path, "pt") as handle:
            metadata = handle.metadata()
            assert len(list(handle.keys())) == result["saved_file"]["n_keys"]
    for key in ("sshs_model_hash", "sshs_legacy_hash"):
        assert metadata[key] == result["saved_file"]["metadata"][key]


def check_bad_input(build, bad: dict, accepted) -> None:
    """A recorded bad input is refused with a NetworkArgError (a ValueError) naming the key and the
    value, unless the family accepts it on purpose (`accepted`: slugs), where it must build."""
    import pytest

    from lr_weights.errors import NetworkArgError

    if bad["slug"] in accepted:
        build(bad)
        return
    with pytest.raises(NetworkArgError) as error:
        build(bad)
    assert isinstance(error.value, ValueError)
    assert error.value.key == bad["bad_key"]
    assert bad["bad_key"] in str(error.value) and str(bad["network_args"][bad["bad_key"]]) in str(error.value)
