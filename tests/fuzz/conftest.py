"""Fixtures of the fuzz suite: tiny models and index templates built once per session; the count report."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import numpy as np
import pytest

from tests.fuzz.harness import COUNTS, ESCAPES


def pytest_sessionfinish(session, exitstatus):
    """With ``MM_FUZZ_REPORT=path.json``, write cases/results/errors/escapes per target."""
    out = os.environ.get("MM_FUZZ_REPORT")
    if not out or not COUNTS:
        return
    report = {target: {key: (value / 1000 if key == "max_seconds_x1000" else value)
                       for key, value in sorted(counts.items())} for target, counts in sorted(COUNTS.items())}
    for target, items in ESCAPES.items():
        report[target]["escape_examples"] = items[:5]
    Path(out).write_text(json.dumps(report, indent=2, ensure_ascii=True))


@pytest.fixture(scope="session")
def tiny_chat():
    import mm
    import mm.testing

    return mm.pipeline("chat", model=mm.testing.make_tiny_lfm2(tempfile.mkdtemp()), dtype="float32")


def _index_template(kind: str) -> Path:
    from mm.index import create_index

    path = Path(tempfile.mkdtemp(prefix=f"mm-fuzz-{kind}-")) / "index"
    rng = np.random.default_rng(0)
    if kind == "dense":
        index = create_index(path, kind="dense", dim=8, encoder_info={"model": "fuzz"})
        index.add([f"d{i}" for i in range(12)], rng.standard_normal((12, 8)).astype(np.float32),
                  texts=[f"text {i} é" for i in range(12)], metadata=[{"n": i, "lang": "en"} for i in range(12)])
    else:
        index = create_index(path, kind="multivector", dim=8, encoder_info={"model": "fuzz"}, train_tokens=40,
                             keep_originals=kind == "multivector-originals")
        vecs = [rng.standard_normal((5, 8)).astype(np.float32) for _ in range(12)]
        index.add([f"d{i}" for i in range(12)], vecs, texts=[f"text {i}" for i in range(12)])
    index.delete(["d3"])
    return path


@pytest.fixture(scope="session")
def index_templates() -> dict[str, Path]:
    """Small committed indexes (dense; multi-vector trained with one tombstone) to copy and damage."""
    return {kind: _index_template(kind) for kind in ("dense", "multivector", "multivector-originals")}
