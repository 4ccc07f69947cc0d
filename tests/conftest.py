"""Shared fixtures: tiny checkpoints are built once per test run (session scope)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"


def find_shared(relative: str = "") -> Path | None:
    """The shared data root holding ``relative``: ``../shared`` beside the repository, else ``$MM_SHARED_DIR``
    (git worktrees live one level deeper, so they point at it with the variable)."""
    candidates = [SHARED]
    if os.environ.get("MM_SHARED_DIR"):
        candidates.append(Path(os.environ["MM_SHARED_DIR"]))
    for root in candidates:
        if (root / relative).exists():
            return root
    return None


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """The shared data root; tests that need it skip when it is absent."""
    root = find_shared()
    if root is None:
        pytest.skip(f"shared data not found at {SHARED} or $MM_SHARED_DIR")
    return root


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
