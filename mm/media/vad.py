"""Split long recordings at silences with silero-vad, so no piece exceeds a length limit.

Nothing is cut mid-word when it can be avoided: pieces are built from whole speech spans
(silero-vad splits a span longer than the limit at its longest inner pause), and the cut
between two pieces lies in the middle of the silence between them.

>>> import numpy as np
>>> split_at_silences(np.zeros(16000, dtype="float32"), 16000, max_seconds=30)
[(0, 16000)]
"""

from __future__ import annotations

import functools
import logging

import numpy as np

from mm.errors import InvalidInputError, MissingDependencyError

log = logging.getLogger(__name__)


@functools.cache
def _silero():
    try:
        from silero_vad import load_silero_vad
    except ImportError as exc:  # pragma: no cover - silero-vad is part of mm[audio]
        raise MissingDependencyError("silero-vad is needed to split long audio: pip install 'mm[audio]'") from exc
    return load_silero_vad()


def speech_spans(samples: np.ndarray, sample_rate: int, max_seconds: float) -> list[tuple[int, int]]:
    """Speech ``(start, end)`` sample ranges found by silero-vad (16 kHz or 8 kHz input)."""
    import torch
    from silero_vad import get_speech_timestamps

    if sample_rate not in (8000, 16000):
        raise InvalidInputError(f"silero-vad needs 8 or 16 kHz audio, got {sample_rate} Hz")
    stamps = get_speech_timestamps(torch.from_numpy(np.ascontiguousarray(samples, dtype=np.float32)), _silero(),
                                   sampling_rate=sample_rate, max_speech_duration_s=max(1.0, max_seconds - 1.0),
                                   min_silence_duration_ms=200, speech_pad_ms=100)
    return [(int(s["start"]), int(s["end"])) for s in stamps]


def split_at_silences(samples: np.ndarray, sample_rate: int, max_seconds: float) -> list[tuple[int, int]]:
    """Sample ranges of at most ``max_seconds`` each that together cover every detected speech span.

    Audio no longer than ``max_seconds`` is one piece (no VAD run). Longer audio without any speech
    raises :class:`InvalidInputError`.
    """
    limit = int(max_seconds * sample_rate)
    total = len(samples)
    if total <= limit:
        return [(0, total)]
    spans = speech_spans(samples, sample_rate, max_seconds)
    if not spans:
        raise InvalidInputError(f"no speech found in {total / sample_rate:.1f} s of audio")
    pieces: list[list[int]] = []
    for start, end in spans:
        while end - start > limit:  # a span the VAD could not split: equal hard cuts, nothing dropped
            pieces.append([start, start + limit])
            start += limit
        if pieces and end - pieces[-1][0] <= limit:
            pieces[-1][1] = end
        else:
            pieces.append([start, end])
    out = []
    for i, (start, end) in enumerate(pieces):  # widen each piece into the silence around it, within the limit
        left = 0 if i == 0 else (pieces[i - 1][1] + start) // 2
        right = total if i == len(pieces) - 1 else (end + pieces[i + 1][0]) // 2
        slack = limit - (end - start)
        left = max(left, start - slack // 2)
        right = min(right, end + slack - (start - left))
        out.append((left, right))
    log.info("split %.1f s of audio into %d pieces at silences", total / sample_rate, len(out))
    return out
