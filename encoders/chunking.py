"""The one chunking module: long-document policies, chunk windows, and the keys of chunks in an index.

A document longer than the encoder's window becomes overlapping windows. With ``long_docs="chunk"``
(the default) every window is indexed as ``"<doc id>#<n>"`` whose metadata carry ``_doc`` (the
document id) and ``_chunk`` (the window number); search maps hits back to their document. A
document that fits stays one entry with its own id. ``long_docs="truncate"`` keeps one entry per
document, which the model truncates at its limit (counted and logged by the indexing job).

Windows are cut at token boundaries: through the fast tokenizer's character offsets when the
encoder has a ``tokenizer`` (each chunk is a readable slice of the original text), otherwise as
runs of whole words whose token counts fit (a single word longer than a window is cut into pieces).

>>> chunk_text("a b c d e f g", _WhitespaceTokenizer(), max_tokens=4, overlap=1)
['a b c d', 'd e f g']
>>> chunk_ids("d1", 1), chunk_ids("d1", 2)
(['d1'], ['d1#0', 'd1#1'])
>>> chunk_metadata("d1", 1, 2, {"lang": "en"})
{'lang': 'en', '_doc': 'd1', '_chunk': 1}
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any

from mm.errors import InvalidInputError

#: separator between a document id and its chunk number
CHUNK_SEP = "#"
#: metadata keys mm adds to the chunks of multi-chunk documents, and the content hash of every entry
DOC_KEY, CHUNK_KEY, SOURCE_KEY = "_doc", "_chunk", "_src"
#: metadata keys that mm itself writes (hidden from search hits)
RESERVED_KEYS = (DOC_KEY, CHUNK_KEY, SOURCE_KEY)
#: what happens to documents longer than the encoder's window
LONG_DOC_POLICIES = ("chunk", "truncate")
#: tokens kept free below the encoder's limit (re-tokenising a cut text may add a token or two)
WINDOW_MARGIN = 8


def chunk_ids(doc_id: str, n_chunks: int) -> list[str]:
    """Index ids of a document's chunks: the doc id itself when it has one chunk, ``id#i`` otherwise."""
    if n_chunks == 1:
        return [doc_id]
    return [f"{doc_id}{CHUNK_SEP}{i}" for i in range(n_chunks)]


def chunk_metadata(doc_id: str, index: int, n_chunks: int, metadata: dict[str, Any]) -> dict[str, Any]:
    """Metadata stored with chunk ``index`` of ``n_chunks`` (a single chunk keeps the document's own)."""
    if n_chunks == 1:
        return dict(metadata)
    return {**metadata, DOC_KEY: doc_id, CHUNK_KEY: index}


def document_of(stored_id: str, metadata: dict[str, Any]) -> str:
    """The document an index entry belongs to (``_doc`` of a chunk, else the entry's own id).

    >>> document_of("a#2", {"_doc": "a", "_chunk": 2}), document_of("a#2", {})
    ('a', 'a#2')
    """
    return metadata.get(DOC_KEY, stored_id)


def check_long_docs(long_docs: str) -> None:
    """Validate a long-document policy name."""
    if long_docs not in LONG_DOC_POLICIES:
        raise InvalidInputError(f"long_docs must be one of {', '.join(LONG_DOC_POLICIES)}, got {long_docs!r}")


@dataclass(frozen=True)
class ChunkPolicy:
    """How documents become chunks: the long-document policy, the window and the overlap (in tokens).

    ``max_tokens=None`` is the encoder's window less :data:`WINDOW_MARGIN`; ``overlap=None`` an eighth
    of the window. :meth:`resolve` fills both for a given encoder.

    >>> from mm.testing.hash_encoder import HashEncoder
    >>> policy = ChunkPolicy().resolve(HashEncoder(dim=4, max_tokens=12))
    >>> policy.max_tokens, policy.overlap
    (4, 0)
    >>> policy.split("one two three four five six", HashEncoder(dim=4))
    ['one two three four', 'five six']
    """

    long_docs: str = "chunk"
    max_tokens: int | None = None
    overlap: int | None = None

    def resolve(self, encoder: Any) -> ChunkPolicy:
        """This policy with the window and overlap fixed for ``encoder`` (validated)."""
        check_long_docs(self.long_docs)
        limit = int(encoder.max_document_tokens)
        if self.long_docs == "truncate":  # one entry per document, cut by the model at its own limit
            return replace(self, max_tokens=limit, overlap=0)
        window = max(1, limit - WINDOW_MARGIN) if self.max_tokens is None else self.max_tokens
        if not isinstance(window, int) or window < 1:
            raise InvalidInputError(f"max_tokens must be a positive integer, got {window!r}")
        if window > limit:
            raise InvalidInputError(f"max_tokens={window} is more than the encoder reads in one pass ({limit}); "
                                    f"use max_tokens <= {limit} (long documents are split into chunks)")
        overlap = window // 8 if self.overlap is None else self.overlap
        if not isinstance(overlap, int) or not 0 <= overlap < window:
            raise InvalidInputError(f"overlap must be in [0, max_tokens={window}), got {overlap!r}")
        return replace(self, max_tokens=window, overlap=overlap)

    def describe(self) -> dict[str, Any]:
        return asdict(self)

    def split(self, text: str, encoder: Any) -> list[str]:
        """Chunks of ``text`` (at least one, even for an empty text); the policy must be resolved."""
        if self.long_docs == "truncate":
            return [text]
        tokenizer = getattr(encoder, "tokenizer", None)
        if tokenizer is not None:
            return chunk_text(text, tokenizer, max_tokens=self.max_tokens, overlap=self.overlap) or [text]
        return split_words(text, encoder, self.max_tokens, self.overlap)


def chunk_text(text: str, tokenizer: Any, *, max_tokens: int, overlap: int) -> list[str]:
    """Cut ``text`` into windows of at most ``max_tokens`` tokens, consecutive windows sharing ``overlap``."""
    if max_tokens < 1:
        raise InvalidInputError(f"max_tokens must be >= 1, got {max_tokens}")
    if not 0 <= overlap < max_tokens:
        raise InvalidInputError(f"overlap must be in [0, max_tokens), got {overlap} for max_tokens={max_tokens}")
    encoded = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    offsets = [tuple(o) for o in encoded["offset_mapping"]]
    if len(offsets) <= max_tokens:
        return [text]
    step = max_tokens - overlap
    pieces = []
    for start in range(0, len(offsets), step):
        window = offsets[start:start + max_tokens]
        pieces.append(text[window[0][0]:window[-1][1]].strip())
        if start + max_tokens >= len(offsets):
            break
    return [p for p in pieces if p]


def split_words(text: str, encoder: Any, max_tokens: int, overlap: int) -> list[str]:
    """Windows of whole words whose token counts (``encoder.token_lengths``) fit ``max_tokens``."""
    words = text.split()
    if not words:
        return [text]
    counts = encoder.token_lengths(words)
    if sum(counts) <= max_tokens:
        return [text]
    if max(counts) > max_tokens:
        words, counts = _split_long_words(words, counts, encoder, max_tokens)
    chunks: list[str] = []
    start = 0
    while start < len(words):
        end, used = start, 0
        while end < len(words) and (end == start or used + counts[end] <= max_tokens):
            used += counts[end]
            end += 1
        chunks.append(" ".join(words[start:end]))
        if end >= len(words):
            break
        back, kept = end, 0  # step back over up to `overlap` tokens of whole words, always moving forward
        while back - 1 > start and kept + counts[back - 1] <= overlap:
            back -= 1
            kept += counts[back]
        start = back
    return chunks


def _split_long_words(words: list[str], counts: list[int], encoder: Any,
                      max_tokens: int) -> tuple[list[str], list[int]]:
    out_words: list[str] = []
    out_counts: list[int] = []
    for word, count in zip(words, counts, strict=True):
        pending = [(word, count)]
        while pending:
            piece, n = pending.pop()
            if n <= max_tokens or len(piece) == 1:
                out_words.append(piece)
                out_counts.append(n)
                continue
            half = len(piece) // 2
            left, right = piece[:half], piece[half:]
            n_left, n_right = encoder.token_lengths([left, right])
            pending.extend([(right, n_right), (left, n_left)])
    return out_words, out_counts


class _WhitespaceTokenizer:
    """A tokenizer stand-in splitting on spaces (for the doctest)."""

    def __call__(self, text: str, add_special_tokens: bool = False, return_offsets_mapping: bool = True):
        offsets, pos = [], 0
        for word in text.split(" "):
            offsets.append((pos, pos + len(word)))
            pos += len(word) + 1
        return {"offset_mapping": offsets}
