"""The package's layout is part of its design: each folder one job, imports only downwards.

Layers, lowest first. A module may import from its own folder and from lower layers only, so
there are no import cycles between folders and a newcomer can read the package bottom-up.
"""

import ast
import importlib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "lr_weights"

# folder (or top-level module) -> layer; the four sd-scripts entry points sit above the network.
LAYERS = {
    "errors": 0,
    "log": 0,
    "__init__": 0,
    "archs": 1,
    "args": 2,
    "adapters": 2,
    "models": 2,
    "files": 3,
    "network": 4,
    "analysis": 4,
    "lora": 5,
    "dylora": 6,
    "flux": 5,
    "lycoris": 6,
    "lbw": 5,
    "cli": 7,
}
ENTRY_POINTS = ("lora", "dylora", "flux", "lycoris")


def _place(module: str) -> str:
    """'lr_weights.args.settings' -> 'args'; 'lr_weights.lora' -> 'lora'; 'lr_weights' -> '__init__'."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _imports(path: Path, root: Path):
    module = ".".join(path.relative_to(root).with_suffix("").parts)
    package = module.rsplit(".", 1)[0] if path.name != "__init__.py" else module.rsplit(".", 1)[0]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target == "lr_weights":
                for alias in node.names:
                    yield f"lr_weights.{alias.name}" if alias.name in LAYERS else "lr_weights"
            elif target.startswith("lr_weights."):
                yield target
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("lr_weights."):
                    yield alias.name


def test_every_folder_and_top_level_module_has_a_layer():
    places = {p.name if p.is_dir() else p.stem for p in PACKAGE.iterdir() if (p.is_dir() and (p / "__init__.py").exists()) or p.suffix == ".py"}
    assert places <= set(LAYERS), f"give these a layer in LAYERS: {sorted(places - set(LAYERS))}"


def upward_imports(root: Path):
    found = []
    for path in sorted((root / "lr_weights").rglob("*.py")):
        source = _place(".".join(path.relative_to(root).with_suffix("").parts))
        for target in _imports(path, root):
            destination = _place(target)
            if destination != source and LAYERS[destination] >= LAYERS[source]:
                found.append(f"{path.relative_to(root)} imports {target} ({source} layer {LAYERS[source]} -> {destination} layer {LAYERS[destination]})")
    return found


def test_imports_only_go_down():
    assert not upward_imports(ROOT), "\n".join(upward_imports(ROOT))


def test_the_layer_check_sees_an_upward_and_a_relative_import(tmp_path):
    # The check must be able to fail: archs/ importing the network, absolutely or relatively.
    archs = tmp_path / "lr_weights" / "archs"
    archs.mkdir(parents=True)
    (archs / "probe.py").write_text("from lr_weights.network.targets import Target\nfrom ..files import io\n", encoding="utf-8")
    assert [line.split(" imports ")[1].split(" ")[0] for line in upward_imports(tmp_path)] == ["lr_weights.network.targets", "lr_weights.files"]


@pytest.mark.parametrize("name", ENTRY_POINTS)
def test_public_entry_points_stay(name):
    if name == "lycoris":
        pytest.importorskip("lycoris")
    module = importlib.import_module(f"lr_weights.{name}")
    assert callable(module.create_network) and callable(module.create_network_from_weights)


@pytest.mark.parametrize("shim, entry", [("lora_lr_weights", "lora"), ("dylora_lr_weights", "dylora"), ("lora_flux_lr_weights", "flux"), ("lycoris_lr_weights", "lycoris")])
def test_copy_in_shims_re_export_their_entry_point(shim, entry):
    text = (ROOT / "networks" / f"{shim}.py").read_text(encoding="utf-8")
    assert f"from lr_weights.{entry} import create_network, create_network_from_weights" in text


def test_documented_lbw_import_still_works():
    from lr_weights.archs import SD
    from lr_weights.lbw import lbw_to_network_args, lbw_vector, parse_lbw

    weights = parse_lbw(SD, "MIDD")
    assert lbw_to_network_args(SD, "MIDD") and lbw_vector(SD, weights.blocks, weights.base)
