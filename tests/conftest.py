"""Shared fixtures: tiny checkpoints are built once per test run (session scope)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """``../shared`` beside the repository; tests that need it skip when it is absent."""
    if not SHARED.is_dir():
        pytest.skip(f"shared data not found at {SHARED}")
    return SHARED


@pytest.fixture(scope="session")
def tiny_lfm2(tmp_path_factory) -> Path:
    """A tiny random LFM2 text checkpoint (written once per session)."""
    from mm.testing import make_tiny_lfm2

    return make_tiny_lfm2(tmp_path_factory.mktemp("tiny_lfm2"), seed=0)


@pytest.fixture(scope="session")
def artifacts_dir() -> Path:
    """Where tests save screenshots and other artifacts."""
    path = REPO / "test-artifacts"
    path.mkdir(exist_ok=True)
    return path
