"""lora_flux's norm hooks exist exactly where upstream's network has them.

sd-scripts' train_network.py calls `network.update_grad_norms()` / `update_norms()` every step and
logs `grad_norms()` / `weight_norms()` whenever the network has them. Upstream's LoRANetwork has them
in networks.lora_flux (and lora_hunyuan_image, whose network subclasses it), not in lora_sd3,
lora_lumina or lora_anima (read off sd-scripts 48d368fa; checked against the checkout below when
SD_SCRIPTS_DIR is set). Ours must match: an extra hook costs a full-size product per module per
step and adds log entries upstream does not write.
"""

import os
import subprocess
import sys

import pytest

from lr_weights.archs import ARCHITECTURES
from lr_weights.network.dit_network import DiTLoRANetwork, NormHookedDiTNetwork, network_class

HOOKS = ("update_norms", "update_grad_norms", "grad_norms", "weight_norms", "combined_weight_norms")
UPSTREAM_HAS_HOOKS = {"flux": True, "hunyuan_image": True, "sd3": False, "sd3-large": False, "lumina": False, "anima": False}


def dit_archs():
    return {key: arch for key, arch in ARCHITECTURES.items() if arch.dit is not None}


def test_every_dit_family_is_listed():
    assert set(dit_archs()) == set(UPSTREAM_HAS_HOOKS)


@pytest.mark.parametrize("name", sorted(UPSTREAM_HAS_HOOKS))
def test_hooks_only_where_upstream_has_them(name):
    cls = network_class(dit_archs()[name])
    assert issubclass(cls, DiTLoRANetwork)
    assert all(hasattr(cls, hook) for hook in HOOKS) is UPSTREAM_HAS_HOOKS[name]
    assert any(hasattr(cls, hook) for hook in HOOKS) is UPSTREAM_HAS_HOOKS[name]
    assert (cls is NormHookedDiTNetwork) is UPSTREAM_HAS_HOOKS[name]


@pytest.mark.skipif(not os.environ.get("SD_SCRIPTS_DIR"), reason="SD_SCRIPTS_DIR is not set")
@pytest.mark.parametrize("name", sorted(UPSTREAM_HAS_HOOKS))
def test_table_matches_the_sd_scripts_checkout(name):
    arch = dit_archs()[name]
    module = arch.upstream_module
    code = (
        f"import inspect, {module} as m; "
        "nets = [c for _, c in inspect.getmembers(m, inspect.isclass) if c.__module__ == m.__name__ and hasattr(c, 'prepare_optimizer_params_with_multiple_te_lrs')]; "
        "print(int(any(hasattr(c, 'update_grad_norms') for c in nets)), len(nets))"
    )
    python = os.environ.get("SD_SCRIPTS_PYTHON") or sys.executable
    out = subprocess.run([python, "-c", code], cwd=os.environ["SD_SCRIPTS_DIR"], capture_output=True, text=True)
    if out.returncode != 0:
        pytest.skip(f"cannot import {module} with {python}: {out.stderr.strip()[-300:]}")
    has_hooks, networks = out.stdout.split()
    assert int(networks) >= 1
    assert bool(int(has_hooks)) is UPSTREAM_HAS_HOOKS[name]
