"""A small persisted index used by the job tests until mm.index lands (same add/delete semantics)."""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path

import numpy as np


class SimpleIndex:
    """id -> (vectors, text, metadata); every add/delete is one atomic file replace."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.mkdir(parents=True, exist_ok=True)
        self._file = self.path / "data.pkl"
        self.rows: dict[str, tuple[np.ndarray, str, dict]] = {}
        if self._file.exists():
            self.rows = pickle.loads(self._file.read_bytes())
        self.adds = 0

    def _commit(self) -> None:
        tmp = self._file.with_suffix(".tmp")
        tmp.write_bytes(pickle.dumps(self.rows))
        os.replace(tmp, self._file)

    def add(self, ids, vectors, texts=None, metadata=None):
        self.adds += 1
        for i, doc_id in enumerate(ids):
            self.rows[doc_id] = (np.asarray(vectors[i]), (texts or [""] * len(ids))[i],
                                 (metadata or [{}] * len(ids))[i])
        self._commit()

    def delete(self, ids):
        for doc_id in ids:
            self.rows.pop(doc_id, None)
        self._commit()

    def __len__(self) -> int:
        return len(self.rows)

    def ids(self) -> list[str]:
        return sorted(self.rows)

    def search(self, qvecs: np.ndarray, k: int = 10) -> list[tuple[str, float]]:
        scores = []
        for doc_id, (vec, _, _) in self.rows.items():
            sim = qvecs @ vec.T
            scores.append((doc_id, float(sim.max(axis=1).sum()) if sim.ndim == 2 else float(sim.sum())))
        scores.sort(key=lambda x: (-x[1], x[0]))
        return scores[:k]

    def dump(self) -> str:
        return json.dumps({k: [v[1], v[2]] for k, v in sorted(self.rows.items())}, sort_keys=True)
