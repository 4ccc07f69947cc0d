"""The result family every pipeline returns.

Generating pipelines (chat, vqa, speech-to-speech, asr, tts) return a :class:`GenerationResult`
subclass: ``.text``, ``.token_ids`` (list of int), ``.stop_reason`` (str), ``.usage`` (int counts)
and ``.timings`` (float seconds, every key ends in ``_s``), plus task fields on top.
Search returns :class:`SearchResults`: a sequence of hits that also carries ``.timings``.

``stop_reason`` is one of :data:`STOP_REASONS`: ``"eos"`` (the model ended its reply: end of text,
end of speech, or for ASR the switch to audio), ``"stop"`` (a ``stop`` string was generated; the text
is cut before it) or ``"max_new_tokens"`` (the budget ran out).

>>> r = GenerationResult("hi", [5, 6], "eos", {"prompt_tokens": 3, "generated_tokens": 2}, {"generate_s": 0.1})
>>> str(r), r.usage["generated_tokens"], r.to_dict()["stop_reason"]
('hi', 2, 'eos')
>>> hits = SearchResults(["a", "b"], {"search_s": 0.01})
>>> len(hits), hits[0], hits.timings
(2, 'a', {'search_s': 0.01})
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

STOP_REASONS = ("eos", "stop", "max_new_tokens")


@dataclass
class GenerationResult:
    """What every generating pipeline returns."""

    text: str
    token_ids: list[int]
    stop_reason: str
    usage: dict[str, int] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.token_ids = [int(t) for t in self.token_ids]
        self.usage = {k: int(v) for k, v in self.usage.items()}
        self.timings = {k: float(v) for k, v in self.timings.items()}

    def __str__(self) -> str:
        return self.text

    def to_dict(self) -> dict[str, Any]:
        """The common fields as plain JSON-ready values."""
        return {"text": self.text, "token_ids": list(self.token_ids), "stop_reason": self.stop_reason,
                "usage": dict(self.usage), "timings": dict(self.timings)}


class SearchResults(Sequence):
    """The hits of one query, best first, with ``timings`` (seconds) of the call that found them."""

    def __init__(self, hits: Sequence[Any], timings: dict[str, float] | None = None) -> None:
        self.hits = list(hits)
        self.timings = {k: float(v) for k, v in (timings or {}).items()}

    def __getitem__(self, index):  # type: ignore[override]
        return self.hits[index]

    def __len__(self) -> int:
        return len(self.hits)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, SearchResults):
            return self.hits == other.hits
        return isinstance(other, list) and self.hits == other

    def __repr__(self) -> str:
        return f"SearchResults({self.hits!r}, timings={self.timings!r})"

    def to_dict(self) -> dict[str, Any]:
        return {"hits": [h.to_dict() if hasattr(h, "to_dict") else h for h in self.hits],
                "timings": dict(self.timings)}


def stop_reason_of(ids_with_end: Sequence[int], end_ids: set[int], text: str, cut_text: str,
                   max_new_tokens: int) -> str:
    """Why one row of generation ended.

    >>> stop_reason_of([4, 2], {2}, "ab", "ab", 8), stop_reason_of([4, 5], {2}, "a##", "a", 8)
    ('eos', 'stop')
    >>> stop_reason_of([4, 5], {2}, "ab", "ab", 2)
    'max_new_tokens'
    """
    if len(cut_text) < len(text):
        return "stop"
    if any(t in end_ids for t in ids_with_end):
        return "eos"
    return "max_new_tokens" if len(ids_with_end) >= max_new_tokens else "eos"
