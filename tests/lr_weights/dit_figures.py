"""Reading the recorded upstream figures of a DiT-kind family (tests/fixtures/upstream/<family>/)
and running one of our entry points the way the recorder ran upstream's (network_recording.py).

Shared by the SD3 and Lumina parity tests. Same-seed equality is checked against an in-process
replay of upstream's init calls (the uniform kernels differ between CPU capabilities), and against
the recorded hashes where this CPU draws what the recording one drew.
"""

from __future__ import annotations

import hashlib
import json
import math
from functools import lru_cache
from pathlib import Path
from typing import Dict, List, Sequence

import torch

from lr_weights.models.skeleton import build_from_skeleton

UPSTREAM = Path(__file__).resolve().parents[1] / "fixtures" / "upstream"
SKIP_OTHER_CPU = (
    "this CPU's uniform kernels (ATEN_CPU_CAPABILITY) draw other values from the same seed than the recording "
    "machine's; same-seed equality is checked against the in-process replay of upstream's init calls instead"
)


class Figures:
    """One family's recorded cases, skeletons and bad inputs."""

    def __init__(self, family: str):
        self.folder = UPSTREAM / family

    @property
    def slugs(self) -> List[str]:
        return sorted(p.stem for p in (self.folder / "cases").glob("*.json"))

    @lru_cache(maxsize=None)
    def case(self, slug: str) -> dict:
        return json.loads((self.folder / "cases" / f"{slug}.json").read_text(encoding="utf-8"))

    @lru_cache(maxsize=None)
    def skeleton(self, name: str) -> dict:
        return json.loads((self.folder / "skeletons" / f"{name}.json").read_text(encoding="utf-8"))

    def model(self, name: str) -> torch.nn.Module:
        return build_from_skeleton(self.skeleton(name), "cpu")

    def bad_inputs(self) -> List[dict]:
        return json.loads((self.folder / "bad_inputs.json").read_text(encoding="utf-8"))


def create(module, spec: dict, text_encoders, model):
    """The host call (train_network.py), as the recorder made it: a seed, `dropout` among the args."""
    args = dict(spec["network_args"])
    args.setdefault("dropout", spec["neuron_dropout"])
    torch.manual_seed(spec["seed"])
    network = module.create_network(1.0, spec["network_dim"], spec["network_alpha"], None, text_encoders, model, neuron_dropout=spec["neuron_dropout"], **args)
    network.apply_to(text_encoders, model, True, True)
    return network


def sha256(tensor: torch.Tensor) -> str:
    return hashlib.sha256(tensor.detach().float().contiguous().numpy().tobytes()).hexdigest()


def down_hashes(network) -> List:
    """Per module, the hash of its initial lora_down (a list of hashes for a split module)."""
    return [sha256(m.lora_down.weight) if getattr(m, "split_dims", None) is None else [sha256(d.weight) for d in m.lora_down] for m in network.all_loras]


def replay_init(seed: int, modules: Sequence[dict]) -> List:
    """The lora_down hashes upstream's calls give on THIS machine: for each module in order its
    down and up layers are constructed (each draws its own init; a split module constructs every
    down, then every up), then kaiming_uniform_(a=sqrt(5)) on the downs."""
    torch.manual_seed(seed)
    hashes: List = []
    for module in modules:
        if "split_dims" in module:
            downs = [torch.nn.Linear(shape[1], shape[0], bias=False) for shape in module["down_shapes"]]
            for shape in module["up_shapes"]:
                torch.nn.Linear(shape[1], shape[0], bias=False)
            for down in downs:
                torch.nn.init.kaiming_uniform_(down.weight, a=math.sqrt(5))
            hashes.append([sha256(d.weight) for d in downs])
            continue
        down_shape, up_shape = module["down_shape"], module["up_shape"]
        if len(down_shape) == 4:  # a k x k conv (SD3's x_embedder): Conv2d down, 1x1 Conv2d up
            down = torch.nn.Conv2d(down_shape[1], down_shape[0], tuple(down_shape[2:]), bias=False)
            torch.nn.Conv2d(up_shape[1], up_shape[0], 1, bias=False)
        else:
            down = torch.nn.Linear(down_shape[1], down_shape[0], bias=False)
            torch.nn.Linear(up_shape[1], up_shape[0], bias=False)
        torch.nn.init.kaiming_uniform_(down.weight, a=math.sqrt(5))
        hashes.append(sha256(down.weight))
    return hashes


def state_digest(state: Dict[str, torch.Tensor], keys: Sequence[str]) -> str:
    """sha256 over (key, float32 bytes) in the given key order, as the recorder hashes upstream's."""
    digest = hashlib.sha256()
    for key in keys:
        digest.update(key.encode("utf-8"))
        digest.update(state[key].detach().float().contiguous().numpy().tobytes())
    return digest.hexdigest()


def lrs_by_name(network, groups) -> Dict[str, float]:
    names = {id(p): n for n, p in network.named_parameters()}
    return {names[id(p)]: g["lr"] for g in groups for p in g["params"]}


def upstream_lrs_by_name(network, result: dict) -> Dict[str, float]:
    """Upstream's parameter indices are named_parameters() order, which is ours (same modules, same
    parameters per module), so index i names our i-th parameter."""
    names = [n for n, _ in network.named_parameters()]
    return {names[i]: g["lr"] for g in result["groups"] for first, last in g["param_index_ranges"] for i in range(first, last + 1)}


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
