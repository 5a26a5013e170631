"""Rebuild a model's module tree from a recorded skeleton (names, class names, layer shapes).

The skeletons in tests/fixtures/upstream/skeletons were recorded from sd-scripts' own SD1/SD2/SDXL
models. Rebuilt on the `meta` device they have the exact names and class names of the real thing,
which is all target discovery reads, and cost no memory.
"""

from __future__ import annotations

import json
from typing import Any, Dict, Mapping

from torch import nn


def _leaf(entry: Mapping[str, Any], device: str) -> nn.Module:
    if entry["type"] == "Linear":
        return nn.Linear(entry["in_features"], entry["out_features"], bias=entry["bias"], device=device)
    if entry["type"] == "Conv2d":
        return nn.Conv2d(
            entry["in_channels"],
            entry["out_channels"],
            tuple(entry["kernel"]),
            tuple(entry["stride"]),
            tuple(entry["padding"]),
            bias=entry["bias"],
            device=device,
        )
    raise ValueError(f"unknown leaf type {entry['type']!r} at {entry['path']!r}")


def build_from_skeleton(skeleton: Mapping[str, Any], device: str = "meta") -> nn.Module:
    """An nn.Module tree with the skeleton's paths and class names; Linear/Conv2d leaves are real."""
    classes: Dict[str, type] = {}

    def container(class_name: str) -> nn.Module:
        if class_name not in classes:
            classes[class_name] = type(class_name, (nn.Module,), {})
        return classes[class_name]()

    modules: Dict[str, nn.Module] = {}
    for entry in skeleton["modules"]:
        path = entry["path"]
        module = _leaf(entry, device) if entry["type"] in ("Linear", "Conv2d") else container(entry["class"])
        modules[path] = module
        if path == "":
            continue
        parent, _, name = path.rpartition(".")
        modules[parent].add_module(name, module)
    return modules[""]


def load_skeleton(path: str, device: str = "meta") -> nn.Module:
    with open(path, encoding="utf-8") as handle:
        return build_from_skeleton(json.load(handle), device)


