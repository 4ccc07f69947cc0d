"""Seeded synthetic corpus of clustered, unit-norm token vectors (for index benchmarks at scale).

Token vectors are drawn around ``n_clusters`` random "word type" centres (contextual
variants of a word stay close to each other). Each document belongs to a topic and
mixes three kinds of tokens, like real token embeddings: a share ``f`` (uniform in
0-0.6, per document) copied from the topic's prototype passage (documents of a topic
paraphrase each other to a varying degree), topic words (a Zipf-weighted set of
clusters) and generic words (a Zipf law over all clusters, like function words).
Documents have 50-300 tokens. A query is a noisy sample of up to 32 tokens of one
document; the other documents of its topic follow at graded distances.

Every document is generated from its own seed, so any document (or the query built
from it) can be regenerated alone, and the corpus can be streamed in chunks without
holding it in memory.

>>> corpus = TokenCorpus(n_docs=10, dim=16, seed=1)
>>> docs = corpus.docs(0, 3)
>>> [d.shape[1] for d in docs], all(50 <= len(d) <= 300 for d in docs)
([16, 16, 16], True)
>>> bool(np.allclose(np.linalg.norm(docs[0], axis=1), 1, atol=1e-5))
True
>>> np.array_equal(corpus.docs(1, 2)[0], docs[1])
True
>>> corpus.query(2).shape
(32, 16)
"""

from __future__ import annotations

import numpy as np


class TokenCorpus:
    """``n_docs`` documents of ``dim``-d token vectors; see the module docstring."""

    def __init__(self, n_docs: int, dim: int = 128, seed: int = 0, n_clusters: int = 8192, n_topics: int = 2048,
                 topic_size: int = 48, spread: float = 0.35, query_noise: float = 0.25, query_tokens: int = 32) -> None:
        self.n_docs, self.dim, self.seed = n_docs, dim, seed
        self.spread, self.query_noise, self.query_tokens = spread, query_noise, query_tokens
        rng = np.random.default_rng([seed, 0])
        centres = rng.normal(size=(n_clusters, dim)).astype(np.float32)
        self.centres = centres / np.linalg.norm(centres, axis=1, keepdims=True)
        # generic tokens: a Zipf law over all clusters; topics: Zipf-weighted subsets
        self.generic_p = 1.0 / np.arange(1, n_clusters + 1) ** 1.1
        self.generic_p /= self.generic_p.sum()
        self.topics = rng.integers(0, n_clusters, size=(n_topics, topic_size))
        self.topic_p = 1.0 / np.arange(1, topic_size + 1) ** 0.8
        self.topic_p /= self.topic_p.sum()
        self.prototypes = rng.integers(0, n_clusters, size=(n_topics, 300))

    def doc_length(self, i: int) -> int:
        return int(np.random.default_rng([self.seed, 1, i]).integers(50, 301))

    def doc(self, i: int) -> np.ndarray:
        """Token vectors (tokens x dim, float32, unit norm) of document ``i``."""
        rng = np.random.default_rng([self.seed, 1, i])
        n = int(rng.integers(50, 301))
        t = rng.integers(len(self.topics))
        topic = self.topics[t]
        kind = rng.random(n)
        share = rng.uniform(0.0, 0.6)
        clusters = np.where(kind < 0.3, rng.choice(len(self.centres), size=n, p=self.generic_p),
                            topic[rng.choice(len(topic), size=n, p=self.topic_p)])
        copied = kind >= 1.0 - share
        clusters[copied] = self.prototypes[t][rng.integers(0, 300, int(copied.sum()))]
        x = self.centres[clusters] + (self.spread / np.sqrt(self.dim)) * rng.normal(size=(n, self.dim)).astype(np.float32)
        return x / np.linalg.norm(x, axis=1, keepdims=True)

    def docs(self, start: int, stop: int) -> list[np.ndarray]:
        """Documents ``start .. stop - 1``."""
        return [self.doc(i) for i in range(start, min(stop, self.n_docs))]

    def query(self, i: int) -> np.ndarray:
        """A query made from document ``i``: up to ``query_tokens`` of its tokens plus noise, unit norm."""
        doc = self.doc(i)
        rng = np.random.default_rng([self.seed, 2, i])
        pick = rng.choice(len(doc), size=min(self.query_tokens, len(doc)), replace=False)
        q = doc[pick] + (self.query_noise / np.sqrt(self.dim)) * rng.normal(size=(len(pick), self.dim)).astype(np.float32)
        return q / np.linalg.norm(q, axis=1, keepdims=True)

    def n_docs_for_tokens(self, n_tokens: int) -> int:
        """Documents needed for about ``n_tokens`` tokens (mean length 175)."""
        return max(1, round(n_tokens / 175))
