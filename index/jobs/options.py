"""The options object of indexing jobs, the encoder recipe workers load, and the job report.

:class:`IndexOptions` is the one set of settings shared by ``mm index build/add/sync``, the Python
API (:func:`mm.index.build_job`) and both engines (local processes, Ray): each field is validated
once, here.

>>> opts = IndexOptions(encoder="minilm", workers=2, resume=True)
>>> opts.replace(prune=True).prune, opts.engine
(True, 'local')
>>> IndexOptions(long_docs="drop")
Traceback (most recent call last):
...
mm.errors.InvalidInputError: long_docs must be one of chunk, truncate, got 'drop'
>>> EncoderSpec("mm.testing.hash_encoder:HashEncoder", {"dim": 4}).load().dim
4
"""

from __future__ import annotations

import importlib
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from mm.encoders.chunking import ChunkPolicy, check_long_docs

from mm.errors import InvalidInputError, choices_text

ENGINES = ("local", "ray")
ENCODER_KINDS = ("auto", "dense", "multivector")


@dataclass(frozen=True)
class EncoderSpec:
    """A picklable recipe for an encoder: ``"module:callable"`` plus keyword arguments.

    Workers (processes, Ray actors on other machines) call :meth:`load`; only this
    small recipe travels, never model weights.
    """

    target: str
    kwargs: dict[str, Any] = field(default_factory=dict)

    def load(self) -> Any:
        """Import the target and call it with ``kwargs``."""
        module_name, _, attr = self.target.partition(":")
        if not module_name or not attr:
            raise InvalidInputError(f"encoder target {self.target!r} must look like 'package.module:callable'")
        try:
            factory = getattr(importlib.import_module(module_name), attr)
        except (ImportError, AttributeError) as exc:
            raise InvalidInputError(f"cannot import encoder target {self.target!r}: {exc}") from exc
        return factory(**self.kwargs)

    def describe(self) -> str:
        """Short human-readable form for logs and summaries."""
        args = ", ".join(f"{k}={v!r}" for k, v in sorted(self.kwargs.items()))
        return f"{self.target}({args})"


def model_spec(model: str | Path | None, kind: str = "auto") -> EncoderSpec:
    """The recipe of an ``mm.encoders`` model (the one model resolution: :func:`mm.encoders.loader.load_encoder`)."""
    return EncoderSpec("mm.encoders.loader:load_encoder", {"model": None if model is None else str(model),
                                                           "kind": kind})


@dataclass(frozen=True)
class IndexOptions:
    """Settings of an indexing job (``mm index build/add/sync``, :func:`mm.index.build_job`).

    Encoder: ``encoder`` (model name/hub id/folder, ``"minilm"``, an :class:`EncoderSpec`, or an
    already loaded encoder object, which runs in-process; None: LFM2-ColBERT-350M when available, else
    MiniLM; for an existing index, None reuses the encoder the index records), ``kind`` (``auto``,
    ``dense``, ``multivector``).
    Chunks: ``long_docs`` (``chunk`` or ``truncate``), ``max_tokens`` (window; default the encoder's
    limit less a margin), ``overlap`` (default an eighth of the window).
    New multi-vector index: ``nbits`` (2 or 4; default 2), ``codec`` (``scalar`` or ``pq``; default
    ``scalar``), or ``codec_from`` (a trained multi-vector index whose codec the new one shares, e.g.
    one shard of a corpus built shard by shard; see :func:`mm.index.create_index`).
    What to do: ``resume`` (update the index at the path: encode what the index lacks or holds in
    another version; False builds a new index and refuses a non-empty folder), ``prune`` (also delete
    documents the source no longer has), ``dry_run`` (report only), ``skip_bad`` (skip malformed records).
    Engine: ``engine`` (``local`` or ``ray``), ``workers`` (processes / actors; default one per core,
    one in-process worker for small corpora), ``threads`` (torch threads per worker), ``ray_address``,
    ``max_restarts`` (Ray actors), ``batch_size`` (chunks per encoder call), ``docs_per_unit``
    (documents per work unit; default 64 for worker processes and Ray actors, ``segment_docs`` in-process,
    where a larger unit sorts chunks by length over more documents: less padding), ``segment_docs``
    (documents per index commit). ``progress``: a live bar.
    """

    encoder: Any = None
    kind: str = "auto"
    long_docs: str = "chunk"
    max_tokens: int | None = None
    overlap: int | None = None
    nbits: int | None = None
    codec: str | None = None
    codec_from: str | Path | None = None
    resume: bool = False
    prune: bool = False
    dry_run: bool = False
    skip_bad: bool = False
    engine: str = "local"
    workers: int | None = None
    threads: int | None = None
    ray_address: str | None = None
    max_restarts: int = 4
    batch_size: int = 32
    docs_per_unit: int | None = None
    segment_docs: int = 1024
    progress: bool = True

    def __post_init__(self) -> None:
        if self.engine not in ENGINES:
            raise InvalidInputError(f"unknown engine {self.engine!r}; valid engines: {choices_text(ENGINES)}")
        if self.engine != "ray" and self.ray_address is not None:
            raise InvalidInputError("ray_address is only used with engine='ray'")
        if self.engine != "ray" and self.max_restarts != 4:
            raise InvalidInputError("max_restarts is only used with engine='ray'")
        if self.kind not in ENCODER_KINDS:
            raise InvalidInputError(f"unknown encoder kind {self.kind!r}; valid: {choices_text(ENCODER_KINDS)}")
        check_long_docs(self.long_docs)
        if self.nbits not in (None, 2, 4):
            raise InvalidInputError(f"nbits must be 2 or 4, got {self.nbits!r}")
        if self.codec not in (None, "scalar", "pq"):
            raise InvalidInputError(f"codec must be 'scalar' or 'pq', got {self.codec!r}")
        if self.prune and not (self.resume or self.dry_run):
            raise InvalidInputError("prune deletes from an existing index: use it with resume=True (--resume)")
        for name in ("batch_size", "docs_per_unit", "segment_docs", "workers", "threads"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise InvalidInputError(f"{name} must be an integer >= 1, got {value!r}")
        if self.kind != "auto" and not isinstance(self.encoder, str | Path | None):
            raise InvalidInputError("kind= applies to a model name; an encoder object or spec fixes its own kind")

    def replace(self, **changes: Any) -> IndexOptions:
        """A copy with ``changes`` (validated)."""
        unknown = set(changes) - {f.name for f in fields(self)}
        if unknown:
            raise InvalidInputError(f"unknown indexing option(s): {', '.join(sorted(unknown))}; valid: "
                                    f"{', '.join(f.name for f in fields(self))}")
        return replace(self, **changes)

    @property
    def policy(self) -> ChunkPolicy:
        """The chunk policy these options ask for (resolved against the encoder by the writer)."""
        return ChunkPolicy(self.long_docs, self.max_tokens, self.overlap)

    def spec(self) -> EncoderSpec | None:
        """The recipe workers load (None for an encoder object, which runs in-process only)."""
        if isinstance(self.encoder, EncoderSpec):
            return self.encoder
        if self.encoder is None or isinstance(self.encoder, str | Path):
            if self.encoder is not None and not str(self.encoder):
                raise InvalidInputError("encoder must be a model name/directory, an EncoderSpec or an encoder")
            return model_spec(self.encoder, self.kind)
        return None


def make_options(options: IndexOptions | None, fields_: dict[str, Any]) -> IndexOptions:
    """``options`` with ``fields_`` applied (both optional)."""
    if options is not None and not isinstance(options, IndexOptions):
        raise InvalidInputError(f"options must be an IndexOptions, got {type(options).__name__}")
    return (options or IndexOptions()).replace(**fields_) if fields_ else (options or IndexOptions())


@dataclass
class JobReport:
    """What a job did (or, with ``dry_run``, would do)."""

    engine: str
    workers: int
    dry_run: bool = False
    docs_seen: int = 0
    docs_new: int = 0
    docs_changed: int = 0
    docs_unchanged: int = 0
    docs_deleted: int = 0
    chunks: int = 0
    tokens: int = 0
    segments: int = 0
    seconds: float = 0.0
    index_docs: int = 0
    index_chunks: int = 0
    index_bytes: int = 0
    docs_truncated: int = 0  # long_docs="truncate": documents the model cut at its window
    skipped: int = 0  # malformed corpus records skipped (skip_bad=True)
    skipped_where: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def docs_encoded(self) -> int:
        return self.docs_new + self.docs_changed

    @property
    def docs_per_s(self) -> float:
        return self.docs_encoded / self.seconds if self.seconds > 0 else 0.0

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.seconds if self.seconds > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out.update(docs_encoded=self.docs_encoded, docs_per_s=round(self.docs_per_s, 2),
                   tokens_per_s=round(self.tokens_per_s, 1), seconds=round(self.seconds, 3))
        return out
