"""Hybrid scoring: BM25 (``bm25s``) over the stored texts fused with the neural scores.

The BM25 model is built in memory from the live documents' texts on the first
hybrid query and kept until the index changes. Fusion of the neural top list and
the BM25 top list (each ``depth`` long, filters applied to both):

* ``"rrf"`` (default): ``alpha / (60 + rank_neural) + (1 - alpha) / (60 + rank_bm25)``;
* ``"linear"``: ``alpha * minmax(neural) + (1 - alpha) * minmax(bm25)`` over the union
  (a document missing from one list gets that list's minimum).

>>> check_fusion(0.5, "rrf")
>>> check_fusion(1.5, "rrf")
Traceback (most recent call last):
...
mm.errors.InvalidInputError: alpha must be within [0, 1], got 1.5
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import numpy as np
from mm.index.maxsim import top_k

from mm.errors import InvalidInputError, require

if TYPE_CHECKING:
    from mm.index.base import Index

log = logging.getLogger(__name__)
RRF_K = 60
FUSIONS = ("rrf", "linear")


def check_fusion(alpha: Any, fusion: Any) -> None:
    """Validate hybrid options."""
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0.0 <= alpha <= 1.0:
        raise InvalidInputError(f"alpha must be within [0, 1], got {alpha!r}")
    if fusion not in FUSIONS:
        raise InvalidInputError(f"fusion must be one of {', '.join(FUSIONS)}, got {fusion!r}")


class BM25Table:
    """BM25 over every live document of an index snapshot; rows map back to (segment, row)."""

    def __init__(self, index: Index) -> None:
        bm25s = require("bm25s", "search")
        self.locs = [(s, int(r)) for s, seg in enumerate(index._segments) for r in np.flatnonzero(seg.live)]
        texts = [index._segments[s].text(r) for s, r in self.locs]
        self.model = bm25s.BM25()
        self.empty = not any(t.strip() for t in texts)
        if not self.empty:
            self.model.index(bm25s.tokenize(texts, stopwords=None, show_progress=False), show_progress=False)
        self._bm25s = bm25s
        self.pos = {loc: i for i, loc in enumerate(self.locs)}

    def scores(self, text: str) -> np.ndarray:
        if self.empty or not text.strip():
            return np.zeros(len(self.locs), dtype=np.float32)
        tokens = self._bm25s.tokenize([text], stopwords=None, show_progress=False, return_ids=False)[0]
        vocab = self.model.vocab_dict
        known = [t for t in tokens if t in vocab]
        if not known:
            return np.zeros(len(self.locs), dtype=np.float32)
        return np.asarray(self.model.get_scores(known), dtype=np.float32)


def fuse(index: Index, neural: list[tuple[int, int, float]], text: str, allowed: list[np.ndarray], depth: int,
         alpha: float, fusion: str) -> list[tuple[int, int, float]]:
    """Fuse neural (segment, row, score) results with BM25 results for ``text``."""
    if not isinstance(text, str):
        raise InvalidInputError(f"hybrid text must be a string, got {type(text).__name__}")
    if index._bm25 is None:
        index._bm25 = BM25Table(index)
    table: BM25Table = index._bm25
    scores = table.scores(text)
    mask = np.array([allowed[s][r] for s, r in table.locs], dtype=bool)
    scores = np.where(mask, scores, -np.inf)
    best = [i for i in top_k(scores, depth) if scores[i] > 0]
    lexical = [(table.locs[i][0], table.locs[i][1], float(scores[i])) for i in best]
    fused: dict[tuple[int, int], float] = {}
    if fusion == "rrf":
        for weight, results in ((alpha, neural), (1.0 - alpha, lexical)):
            for rank, (s, r, _) in enumerate(results):
                fused[(s, r)] = fused.get((s, r), 0.0) + weight / (RRF_K + rank + 1)
    else:
        for weight, results in ((alpha, neural), (1.0 - alpha, lexical)):
            if not results:
                continue
            vals = np.array([v for _, _, v in results])
            lo, hi = float(vals.min()), float(vals.max())
            # a document missing from this list scores its minimum there, i.e. 0 after normalisation;
            # a list whose scores are all equal normalises to 1
            for s, r, v in results:
                norm = (v - lo) / (hi - lo) if hi > lo else 1.0
                fused[(s, r)] = fused.get((s, r), 0.0) + weight * norm
    ranked = sorted(fused.items(), key=lambda kv: (-kv[1], kv[0]))
    return [(s, r, v) for (s, r), v in ranked[:depth]]
