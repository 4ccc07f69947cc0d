"""WAV for streaming: a header that does not know the length yet, then 16-bit PCM pieces.

>>> import numpy as np
>>> head = stream_header(24000)
>>> head[:4], head[8:12], len(head)
(b'RIFF', b'WAVE', 44)
>>> len(pcm16(np.zeros(10, np.float32)))
20
"""

from __future__ import annotations

import struct

import numpy as np

UNKNOWN = 0xFFFFFFFF  # the streaming convention for "size not known": readers take the data up to the end


def stream_header(sample_rate: int, channels: int = 1) -> bytes:
    """A 44-byte PCM16 WAV header whose RIFF and data sizes are the 'unknown' value."""
    byte_rate = sample_rate * channels * 2
    return (b"RIFF" + struct.pack("<I", UNKNOWN) + b"WAVE" + b"fmt " +
            struct.pack("<IHHIIHH", 16, 1, channels, sample_rate, byte_rate, channels * 2, 16) +
            b"data" + struct.pack("<I", UNKNOWN))


def pcm16(samples: np.ndarray) -> bytes:
    """float samples in [-1, 1] as little-endian 16-bit PCM (clipped)."""
    clipped = np.clip(np.asarray(samples, dtype=np.float32), -1.0, 1.0)
    return (clipped * 32767.0).round().astype("<i2").tobytes()
