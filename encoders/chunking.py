"""Split long documents into overlapping token windows that an encoder takes without truncation.

Each window is a slice of the original text (cut at token boundaries through the fast tokenizer's
character offsets), so the chunk text shown in a hit is readable. Chunk ids are
``"<doc id>#<n>"``; a document that fits stays one chunk with its own id.

>>> chunk_text("a b c d e f g", _WhitespaceTokenizer(), max_tokens=4, overlap=1)
['a b c d', 'd e f g']
"""

from __future__ import annotations

from dataclasses import dataclass

from mm.errors import InvalidInputError

#: separator between a document id and its chunk number
CHUNK_SEP = "#"


@dataclass(frozen=True)
class Chunk:
    """One window of a document."""

    doc_id: str
    chunk_id: str
    index: int
    text: str


def chunk_text(text: str, tokenizer, *, max_tokens: int, overlap: int) -> list[str]:
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


def chunk_documents(ids: list[str], texts: list[str], tokenizer, *, max_tokens: int,
                    overlap: int | None = None) -> list[Chunk]:
    """Chunk every document; ids of multi-window documents become ``id#0``, ``id#1``, ...

    ``overlap`` defaults to an eighth of the window.
    """
    overlap = max_tokens // 8 if overlap is None else overlap
    chunks: list[Chunk] = []
    for doc_id, text in zip(ids, texts, strict=True):
        pieces = chunk_text(text, tokenizer, max_tokens=max_tokens, overlap=overlap)
        if len(pieces) == 1:
            chunks.append(Chunk(doc_id, doc_id, 0, pieces[0]))
        else:
            chunks.extend(Chunk(doc_id, f"{doc_id}{CHUNK_SEP}{n}", n, piece) for n, piece in enumerate(pieces))
    return chunks


class _WhitespaceTokenizer:
    """A tokenizer stand-in splitting on spaces (for the doctest)."""

    def __call__(self, text: str, add_special_tokens: bool = False, return_offsets_mapping: bool = True):
        offsets, pos = [], 0
        for word in text.split(" "):
            offsets.append((pos, pos + len(word)))
            pos += len(word) + 1
        return {"offset_mapping": offsets}
