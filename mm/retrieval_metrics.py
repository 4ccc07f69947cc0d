"""Retrieval metrics and TREC/BEIR file helpers: qrels, run files, nDCG@k, recall@k.

>>> qrels = {"q1": {"d1": 1, "d3": 1}}
>>> run = {"q1": ["d1", "d2", "d3"]}
>>> round(ndcg_at_k(qrels, run, 10), 4)
0.9197
>>> recall_at_k(qrels, run, 2)
0.5
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path

from mm.errors import InvalidInputError


def read_qrels(path: str | Path) -> dict[str, dict[str, int]]:
    """BEIR qrels TSV (``query-id corpus-id score`` with a header) or TREC qrels (``qid 0 docid rel``)."""
    qrels: dict[str, dict[str, int]] = {}
    for number, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), start=1):
        parts = line.split()
        if not parts or (number == 1 and not parts[-1].lstrip("-").isdigit()):
            continue
        if len(parts) == 3:
            qid, doc, rel = parts
        elif len(parts) == 4:
            qid, _, doc, rel = parts
        else:
            raise InvalidInputError(f"{path}:{number}: expected 3 (BEIR) or 4 (TREC) columns, got {len(parts)}")
        qrels.setdefault(qid, {})[doc] = int(rel)
    return qrels


def read_run(path: str | Path) -> dict[str, list[str]]:
    """A TREC run file (``qid Q0 docid rank score tag``) as ranked doc ids per query."""
    scored: dict[str, list[tuple[float, int, str]]] = {}
    for number, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), start=1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) != 6:
            raise InvalidInputError(f"{path}:{number}: a TREC run line has 6 columns, got {len(parts)}")
        qid, _, doc, rank, score, _ = parts
        scored.setdefault(qid, []).append((-float(score), int(rank), doc))
    return {q: [d for _, _, d in sorted(rows)] for q, rows in scored.items()}


def ndcg_at_k(qrels: Mapping[str, Mapping[str, int]], run: Mapping[str, Sequence[str]], k: int = 10) -> float:
    """Mean nDCG@k over the queries of ``qrels`` (linear gains, as pytrec_eval/BEIR; missing runs score 0)."""
    total, n = 0.0, 0
    for qid, rels in qrels.items():
        ideal = sorted((r for r in rels.values() if r > 0), reverse=True)[:k]
        if not ideal:
            continue
        idcg = sum(g / math.log2(i + 2) for i, g in enumerate(ideal))
        ranked = run.get(qid, [])[:k]
        dcg = sum(rels.get(doc, 0) / math.log2(i + 2) for i, doc in enumerate(ranked) if rels.get(doc, 0) > 0)
        total += dcg / idcg
        n += 1
    return total / n if n else 0.0


def recall_at_k(qrels: Mapping[str, Mapping[str, int]], run: Mapping[str, Sequence[str]], k: int = 10) -> float:
    """Mean fraction of each query's relevant documents found in its top ``k``."""
    total, n = 0.0, 0
    for qid, rels in qrels.items():
        relevant = {d for d, r in rels.items() if r > 0}
        if not relevant:
            continue
        total += len(relevant & set(run.get(qid, [])[:k])) / len(relevant)
        n += 1
    return total / n if n else 0.0


def overlap_at_k(reference: Mapping[str, Sequence[str]], run: Mapping[str, Sequence[str]], k: int = 10) -> float:
    """Mean fraction of the reference's top ``k`` that ``run``'s top ``k`` also holds (recall vs. exhaustive)."""
    values = [len(set(ref[:k]) & set(run.get(q, [])[:k])) / len(ref[:k]) for q, ref in reference.items() if ref]
    return sum(values) / len(values) if values else 0.0
