"""Shared test set-up: tiny models only, no network, one CPU thread (tiny ops gain nothing from
more, and a second thread makes timings of a busy 2-core machine erratic)."""

import json
import os
from pathlib import Path

import pytest
import torch

torch.set_num_threads(1)

try:  # property-based tests (tests/lr_weights/test_fuzz_*.py): few examples in CI, many on demand
    from hypothesis import HealthCheck, settings

    settings.register_profile("ci", max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    # LRW_HYPOTHESIS_PROFILE=campaign: the long fuzzing campaign (tens of thousands of examples).
    settings.register_profile("campaign", max_examples=2500, deadline=None, suppress_health_check=list(HealthCheck))
    settings.load_profile(os.environ.get("LRW_HYPOTHESIS_PROFILE", "ci"))
except ImportError:  # hypothesis is a test extra; the fuzz tests skip without it
    pass

FIXTURES = Path(__file__).parent / "fixtures"
UPSTREAM = FIXTURES / "upstream"


def upstream_case(slug: str) -> dict:
    return json.loads((UPSTREAM / "cases" / f"{slug}.json").read_text(encoding="utf-8"))


def upstream_case_slugs():
    return sorted(p.stem for p in (UPSTREAM / "cases").glob("*.json"))


@pytest.fixture
def tiny_sd():
    from lr_weights.models.tiny import build_tiny_sd

    return build_tiny_sd(seed=0)


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: long-running tests (still run in CI)")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
