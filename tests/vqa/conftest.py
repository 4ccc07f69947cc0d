"""Fixtures of the VQA tests: the shared LFM2-VL processor goldens and a tiny LFM2-VL checkpoint."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import find_shared

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def vl_fixtures() -> Path:
    """The LFM2-VL processor golden bundle; skips when the shared data is absent."""
    shared = find_shared("fixtures/lfm2_vl_processor/goldens")
    if shared is None or not (shared / "fixtures" / "lfm2_vl_processor" / "goldens").is_dir():
        pytest.skip("shared LFM2-VL goldens not found (../shared or $MM_SHARED_DIR)")
    return shared / "fixtures" / "lfm2_vl_processor"


@pytest.fixture(scope="session")
def golden_cases(vl_fixtures) -> dict:
    return json.loads((vl_fixtures / "goldens" / "cases.json").read_text())


@pytest.fixture(scope="session")
def manifest(vl_fixtures) -> dict:
    return {m["name"]: m for m in json.loads((vl_fixtures / "images" / "manifest.json").read_text())}


@pytest.fixture(scope="session")
def tiny_vl(tmp_path_factory) -> Path:
    """A tiny random LFM2-VL checkpoint (transformers-5 layout), written once per session."""
    from mm.testing import make_tiny_lfm2_vl

    return make_tiny_lfm2_vl(tmp_path_factory.mktemp("tiny_lfm2_vl"), seed=0)


@pytest.fixture(scope="session")
def vqa(tiny_vl):
    """The VQA pipeline on the tiny checkpoint (float32)."""
    import mm

    return mm.pipeline("vqa", model=tiny_vl, dtype="float32")


@pytest.fixture(scope="session")
def img_512():
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    return Image.fromarray(rng.integers(0, 256, (512, 512, 3), dtype=np.uint8))
