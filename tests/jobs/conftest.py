"""Fixtures of the indexing-job tests: synthetic corpora, the tiny hash encoder, index helpers."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
from mm.index.jobs import EncoderSpec

WORDS = [f"w{i}" for i in range(400)] + ["protein", "cell", "gene", "cancer", "brain", "virus"]
QUERIES = ["protein cell", "gene cancer w1 w2", "brain virus", "w10 w20 w30", "cell gene w5"]


def write_corpus(path: Path, n: int, *, seed: int = 0, changed: dict[str, str] | None = None) -> Path:
    """BEIR-style corpus.jsonl with ``n`` docs of 3..150 words (long ones become several chunks)."""
    rng = random.Random(seed)
    with path.open("w") as fh:
        for i in range(n):
            doc_id = f"d{i}"
            text = " ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 150)))
            if changed and doc_id in changed:
                text = changed[doc_id]
            fh.write(json.dumps({"_id": doc_id, "title": f"title {i}", "text": text}) + "\n")
    return path


def encoder(**kwargs) -> EncoderSpec:
    """The tiny deterministic encoder (multi-vector, 16-d, chunks of at most 48 tokens)."""
    return EncoderSpec("mm.testing.hash_encoder:HashEncoder", {"dim": 16, "max_tokens": 48, **kwargs})


@pytest.fixture(scope="session")
def corpus_3k(tmp_path_factory) -> Path:
    """3,000 documents, written once per session."""
    return write_corpus(tmp_path_factory.mktemp("corpus") / "corpus.jsonl", 3000)


# -- index access (the only place the tests touch the index implementation) -----------------------
def index_target(path: Path) -> Path:
    """What build_job gets as ``index`` for a folder."""
    return path


def index_ids(path: Path) -> list[str]:
    """Sorted ids in the index at ``path``."""
    from mm.index import open_index

    return sorted(open_index(path).ids())


def index_meta(path: Path) -> dict[str, dict]:
    """id -> metadata."""
    from mm.index import open_index

    idx = open_index(path)
    return {i: idx.get(i).metadata for i in idx.ids()}


def top_hits(path: Path, queries: list[str], k: int = 10) -> list[list[tuple[str, float]]]:
    """Exact top-k (id, score) for each query, encoded with the test encoder."""
    from mm.index import open_index

    idx = open_index(path)
    enc = encoder().load()
    return [[(h.id, h.score) for h in idx.search(q, k=k, exact=True)] for q in enc.encode_queries(queries)]
