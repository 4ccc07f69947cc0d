"""Fixtures of the search tests: shared goldens, tiny ColBERT checkpoints, small corpora, built indexes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import find_shared

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def shared() -> Path:
    path = find_shared()
    if path is None:
        pytest.skip("shared data not found (../shared beside the repository, or set MM_SHARED_DIR)")
    return path


@pytest.fixture(scope="session")
def colbert_fixture(shared) -> Path:
    path = shared / "fixtures" / "lfm2_colbert_tiny"
    if not (path / "checkpoint").is_dir():
        pytest.skip(f"{path} is missing")
    return path


@pytest.fixture(scope="session")
def tiny_colbert(tmp_path_factory) -> Path:
    """A tiny random LFM2-ColBERT checkpoint written by mm.testing (real layout)."""
    from mm.testing import make_tiny_colbert

    return make_tiny_colbert(tmp_path_factory.mktemp("tiny_colbert"), seed=3, query_length=16, document_length=64)


@pytest.fixture(scope="session")
def small_corpus(tmp_path_factory) -> Path:
    """A BEIR-style corpus.jsonl: a few documents in several languages, one long enough to be chunked."""
    docs = [
        {"_id": "eiffel", "title": "Eiffel Tower", "text": "The Eiffel Tower was completed in 1889 in Paris.",
         "lang": "en"},
        {"_id": "rhein", "title": "", "text": "Der Rhein fließt durch Basel, Köln und Düsseldorf.", "lang": "de"},
        {"_id": "tortilla", "title": "", "text": "La tortilla de patatas es un plato típico de España.",
         "lang": "es"},
        {"_id": "photo", "title": "Photosynthesis", "text": "Plants convert light energy into chemical energy.",
         "lang": "en"},
        {"_id": "long", "title": "Volcanoes", "text": " ".join(
            f"Sentence {i}: volcanoes erupt molten rock called lava and ash." for i in range(60))
            + " The final sentence mentions the unique keyword zirconium.", "lang": "en"},
    ]
    path = tmp_path_factory.mktemp("corpus") / "corpus.jsonl"
    path.write_text("".join(json.dumps(d, ensure_ascii=False) + "\n" for d in docs), encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def minilm_index(small_corpus, tmp_path_factory) -> Path:
    """``small_corpus`` indexed with the offline MiniLM (dense)."""
    from mm.index import build_job

    path = tmp_path_factory.mktemp("mi") / "index"
    build_job(small_corpus, path, encoder="minilm", progress=False)
    return path


@pytest.fixture(scope="session")
def colbert_index(small_corpus, tiny_colbert, tmp_path_factory) -> Path:
    """``small_corpus`` indexed with the tiny random ColBERT (multi-vector)."""
    from mm.index import build_job

    path = tmp_path_factory.mktemp("ci") / "index"
    build_job(small_corpus, path, encoder=str(tiny_colbert), progress=False)
    return path
