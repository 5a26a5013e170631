"""Recorded upstream figures of a DiT family (tests/fixtures/upstream/<family>/) and our network built
for one recorded case: what the Anima and HunyuanImage parity tests share.

The figures' format is flux/README.md's (the recorders share tests/fixtures/upstream/network_recording.py).
The tiny models are rebuilt from the recorded skeletons, so no sd-scripts import is needed.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import tempfile
from functools import lru_cache
from pathlib import Path
from typing import Callable, Dict, List

import torch

from lr_weights.models.skeleton import build_from_skeleton

UPSTREAM = Path(__file__).resolve().parent / "fixtures" / "upstream"

SKIP_OTHER_CPU = (
    "this CPU's uniform kernels (ATEN_CPU_CAPABILITY) draw other values from the same seed than the recording "
    "machine's; same-seed equality is checked against the in-process replay of upstream's init calls instead"
)


def sha256(tensor: torch.Tensor) -> str:
    return hashlib.sha256(tensor.detach().float().contiguous().numpy().tobytes()).hexdigest()


def replay_init(spec: dict) -> tuple:
    """The initial lora_down hashes upstream's calls give on THIS machine for a recorded case: per
    recorded module, nn.Linear(in, dim) and nn.Linear(dim, out) are constructed (each draws its own
    init), then kaiming_uniform_(a=sqrt(5)) on the down (and, with GGPO, one randperm over the base
    layer's rows). The uniform kernels differ between CPU capabilities (ATEN_CPU_CAPABILITY), so the
    recorded hashes hold on CPUs like the recording one; the replay holds on every CPU."""
    ggpo = "ggpo_beta" in spec["network_args"] and "ggpo_sigma" in spec["network_args"]
    torch.manual_seed(spec["seed"])
    hashes = []
    for module in spec["result"]["modules"]:
        assert "split_dims" not in module  # upstream's split sizes are hard-coded: no such tiny case
        dim, n_in = module["down_shape"]
        n_out = module["up_shape"][0]
        down = torch.nn.Linear(n_in, dim, bias=False)
        torch.nn.Linear(dim, n_out, bias=False)
        torch.nn.init.kaiming_uniform_(down.weight, a=math.sqrt(5))
        if ggpo:
            torch.randperm(n_out)
        hashes.append(sha256(down.weight))
    return tuple(hashes)


class Figures:
    """One family's recorded cases and our entry point run on them, the way upstream was run."""

    def __init__(self, family: str, entry_point, models: Callable[["Figures", dict], tuple], init_from: Dict[str, str] = None):
        """`init_from`: cases whose modules were drawn as part of another case's (apply_to without the
        text encoder drops modules that were created, and drew, first): slug -> that case."""
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
        """upstream's host contract: seed, create_network, apply_to (network_args override the case's)."""
        encoders, dit = self._models(self, spec)
        torch.manual_seed(spec["seed"])
        args = spec["network_args"] if network_args is None else network_args
        network = self.entry_point.create_network(
            1.0, spec["network_dim"], spec["network_alpha"], None, encoders, dit, neuron_dropout=spec["neuron_dropout"], **args
        )
        network.apply_to(encoders, dit, spec.get("apply_text_encoder", True), True)
        return network

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
        return replay_init(self.case(slug))

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
    """Upstream's parameter list is, per module in creation order, lora_down.weight then lora_up.weight."""
    names = [f"{m['name']}.{part}.weight" for m in result["modules"] for part in ("lora_down", "lora_up")]
    return {names[i]: g["lr"] for g in result["groups"] for first, last in g["param_index_ranges"] for i in range(first, last + 1)}


def assert_groups_match(network, groups: List[dict], descriptions: List[str], result: dict) -> None:
    """Per-parameter LRs, group order, descriptions and sizes."""
    assert lrs_by_name(network, groups) == upstream_lrs_by_name(result)
    assert descriptions == [" ".join(g["description"].split()) for g in result["groups"]]
    assert [len(list(g["params"])) for g in groups] == [g["n_tensors"] for g in result["groups"]]


def state_dict_sha256(state: dict) -> str:
    digest = hashlib.sha256()
    for key, value in state.items():
        digest.update(key.encode("utf-8"))
        digest.update(value.detach().float().contiguous().numpy().tobytes())
    return digest.hexdigest()


def assert_file_matches(network, result: dict) -> None:
    """state_dict keys, order and tensors (one digest), the saved file's keys and upstream's hashes."""
    state = network.state_dict()
    assert len(state) == result["state_dict"]["n_keys"]
    assert state_dict_sha256(state) == result["state_dict"]["sha256_all"]
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "lora.safetensors")
        network.save_weights(path, None, {})
        from safetensors import safe_open

        with safe_open(path, "pt") as handle:
            metadata = handle.metadata()
            assert len(list(handle.keys())) == result["saved_file"]["n_keys"]
    for key in ("sshs_model_hash", "sshs_legacy_hash"):
        assert metadata[key] == result["saved_file"]["metadata"][key]
