"""Batch indexing jobs, in stages: :mod:`~mm.index.jobs.source` (read), :mod:`~mm.index.jobs.plan`
(what to encode), :mod:`~mm.index.jobs.encode` / :mod:`~mm.index.jobs.engines` (chunk and encode,
locally or on Ray), :mod:`~mm.index.jobs.merge` (commit through :mod:`mm.index.writer`) and
:mod:`~mm.index.jobs.finalize` (prune, totals); :mod:`~mm.index.jobs.run` drives them.

Settings are one :class:`IndexOptions` object, shared by the CLI, the Python API and both engines.

>>> import json, tempfile, pathlib
>>> tmp = pathlib.Path(tempfile.mkdtemp())
>>> _ = (tmp / "c.jsonl").write_text('{"_id": "a", "text": "alpha"}\\n{"_id": "b", "text": "beta"}\\n')
>>> opts = IndexOptions(encoder=EncoderSpec("mm.testing.hash_encoder:HashEncoder", {"dim": 8}), progress=False)
>>> build_job(tmp / "c.jsonl", tmp / "idx", opts).docs_new
2
>>> _ = (tmp / "c.jsonl").write_text('{"_id": "a", "text": "alpha"}\\n')
>>> report = sync(tmp / "c.jsonl", tmp / "idx", progress=False)
>>> report.docs_unchanged, report.docs_deleted, report.index_docs
(1, 1, 1)
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from mm.index.jobs.options import EncoderSpec, IndexOptions, JobReport, make_options
from mm.index.jobs.run import STATE_DIR, build_job

from mm.corpus import Document

__all__ = ["STATE_DIR", "EncoderSpec", "IndexOptions", "JobReport", "add", "build_job", "sync"]


def add(source: str | Path | Iterable[Document], index: str | Path, options: IndexOptions | None = None, /,
        **fields: Any) -> JobReport:
    """Add the documents of ``source`` to the existing index (new ones encoded, changed ones replaced,
    unchanged ones skipped), with the encoder and chunk policy the index records."""
    return build_job(source, index, make_options(options, fields).replace(resume=True))


def sync(source: str | Path | Iterable[Document], index: str | Path, options: IndexOptions | None = None, /,
         **fields: Any) -> JobReport:
    """Make the index equal to ``source``: add new, re-encode changed, delete documents the source lacks
    (``build_job(..., resume=True, prune=True)``)."""
    return build_job(source, index, make_options(options, fields).replace(resume=True, prune=True))
