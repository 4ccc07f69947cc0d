"""Sharded search: one index per shard (built by any engine), each searched alone, top k merged by score.

An index scales out by documents: split the corpus into shards, build one index folder per
shard (e.g. ``build_job(..., engine="ray")`` per shard), open each where it is served, send
every shard the same query and keep the best ``k`` of the union of the shards' top ``k``.
The merge is exact when the shards' scores are the same function of the same vectors:
exact MaxSim (raw segments, ``exact=True`` with originals), or compressed shards that share
one codec (see ``docs/search-index.md``, "Beyond one machine"). Ids must be unique across shards.

>>> a = [Hit("x", 0.9, ""), Hit("y", 0.5, "")]
>>> b = [Hit("z", 0.7, ""), Hit("w", 0.1, "")]
>>> [h.id for h in merge_top_k([a, b], k=3)]
['x', 'z', 'y']
"""

from __future__ import annotations

import heapq
from collections.abc import Sequence
from typing import Any

from mm.index.base import Hit, Index

from mm.errors import InvalidInputError


def merge_top_k(per_shard: Sequence[Sequence[Hit]], k: int) -> list[Hit]:
    """The ``k`` best hits (highest score first; ties: earlier shard, then its own order) of per-shard lists."""
    if isinstance(k, bool) or not isinstance(k, int) or k <= 0:
        raise InvalidInputError(f"k must be a positive integer, got {k!r}")
    keyed = ((-h.score, s, r, h) for s, hits in enumerate(per_shard) for r, h in enumerate(hits))
    return [h for *_, h in heapq.nsmallest(k, keyed, key=lambda t: t[:3])]


def search_shards(shards: Sequence[Index], query: Any, k: int = 10, **options: Any) -> list[Hit]:
    """Search every shard for its top ``k`` (same ``options``) and merge them (:func:`merge_top_k`).

    Latency is the slowest shard's plus the merge (``k * len(shards)`` hits).
    """
    if not shards:
        raise InvalidInputError("search_shards() needs at least one shard")
    return merge_top_k([shard.search(query, k=k, **options) for shard in shards], k)
