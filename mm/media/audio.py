"""Audio input: load a file, bytes or an array, mix to mono, resample with soxr, validate.

Every problem a user can cause (missing file, corrupt or unsupported format, empty,
silent, non-finite or too long audio) raises an :class:`mm.errors.MMError` subclass with a
message that says what was wrong and what to do.

>>> import numpy as np
>>> clip = load_audio(np.sin(np.linspace(0, 800, 8000)).astype("float32"), sampling_rate=8000)
>>> clip.sample_rate, clip.samples.shape, round(clip.duration, 3)
(16000, (16000,), 1.0)
>>> load_audio(np.zeros(16000, dtype="float32"), sampling_rate=16000)
Traceback (most recent call last):
...
mm.errors.InvalidInputError: the audio is silent (peak amplitude 0); pass a recording that contains sound
"""

from __future__ import annotations

import io
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mm.errors import InputTooLargeError, InvalidInputError, MissingDependencyError
from mm.validation import check_input_file, check_sample_rate

log = logging.getLogger(__name__)

#: peak amplitude (full scale = 1.0) under which a clip counts as silent (about -80 dBFS)
SILENCE_PEAK = 1e-4
#: file suffixes soundfile (libsndfile) reads; others are still tried, this is only for messages
KNOWN_SUFFIXES = (".wav", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".aiff", ".aif", ".au", ".caf", ".w64")


@dataclass
class AudioClip:
    """Mono float32 samples in [-1, 1] at ``sample_rate`` Hz."""

    samples: np.ndarray
    sample_rate: int

    @property
    def duration(self) -> float:
        """Length in seconds."""
        return len(self.samples) / float(self.sample_rate)


def _soundfile():
    try:
        import soundfile
    except ImportError as exc:  # pragma: no cover - soundfile is part of mm[audio]
        raise MissingDependencyError("soundfile is needed to read audio files: pip install 'mm[audio]'") from exc
    return soundfile


def _read_file(source: str | os.PathLike[str] | bytes) -> tuple[np.ndarray, int]:
    sf = _soundfile()
    if isinstance(source, bytes | bytearray):
        if not source:
            raise InvalidInputError("the audio bytes are empty; pass the contents of a wav/flac/ogg file")
        handle: Any = io.BytesIO(bytes(source))
        name = "the audio bytes"
    else:
        path = check_input_file(source, "audio file")
        handle, name = str(path), f"audio file {str(path)!r}"
    try:
        data, rate = sf.read(handle, dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError) as exc:
        raise InvalidInputError(
            f"{name} could not be decoded ({exc}); it is corrupt or not a format libsndfile reads "
            f"(supported: {', '.join(s.lstrip('.') for s in KNOWN_SUFFIXES[:4])}, ...). Convert it, e.g. "
            f"`ffmpeg -i input output.wav`"
        ) from exc
    return data, int(rate)


def _as_array(source: Any) -> np.ndarray:
    try:
        import torch

        if isinstance(source, torch.Tensor):
            source = source.detach().to("cpu", torch.float32).numpy()
    except ImportError:  # pragma: no cover
        pass
    try:
        array = np.asarray(source)
    except (ValueError, TypeError) as exc:  # ragged nested lists and the like
        raise InvalidInputError(f"the audio could not be read as an array of samples: {exc}") from exc
    if array.dtype.kind not in "fiu":
        raise InvalidInputError(f"audio arrays must hold numbers, got dtype {array.dtype}")
    if array.dtype == np.int16:
        return array.astype(np.float32) / 32768.0
    if array.dtype == np.int32:
        return array.astype(np.float32) / 2147483648.0
    if array.dtype.kind in "iu":
        raise InvalidInputError(f"integer audio must be int16 or int32 PCM, got {array.dtype}")
    return array.astype(np.float32, copy=False)


def _to_mono(data: np.ndarray, channels_last: bool) -> np.ndarray:
    if data.ndim == 1:
        return data
    if data.ndim != 2:
        raise InvalidInputError(f"audio must be 1-D (mono) or 2-D (channels), got shape {tuple(data.shape)}")
    if not channels_last:  # arrays: the short axis is the channel axis
        channels_last = data.shape[1] <= data.shape[0]
    if channels_last:
        return data.mean(axis=1) if data.shape[1] > 1 else data[:, 0]
    return data.mean(axis=0) if data.shape[0] > 1 else data[0]


def resample(samples: np.ndarray, orig_rate: int, target_rate: int) -> np.ndarray:
    """Resample mono float32 ``samples`` with soxr (very high quality).

    >>> resample(np.ones(441, dtype="float32"), 44100, 16000).shape
    (160,)
    """
    if orig_rate == target_rate:
        return samples.astype(np.float32, copy=False)
    try:
        import soxr
    except ImportError as exc:  # pragma: no cover - soxr is part of mm[audio]
        raise MissingDependencyError("soxr is needed to resample audio: pip install 'mm[audio]'") from exc
    return soxr.resample(samples, orig_rate, target_rate, quality="VHQ").astype(np.float32, copy=False)


def load_audio(source: Any, sampling_rate: int | None = None, *, target_rate: int = 16000,
               max_seconds: float | None = None, min_seconds: float = 0.0, allow_silent: bool = False) -> AudioClip:
    """Load ``source`` as mono float32 audio at ``target_rate``.

    ``source`` is a path (any format soundfile reads: wav, flac, ogg, ...), the bytes of such a file,
    an :class:`AudioClip`, a ``(array, sampling_rate)`` pair, or an array / tensor (then
    ``sampling_rate`` is required). Stereo is averaged to mono. ``max_seconds`` is checked on the
    input length; longer audio raises :class:`InputTooLargeError` (never silently cut).
    """
    if isinstance(source, AudioClip):
        data, rate, channels_last = source.samples, source.sample_rate, True
    elif isinstance(source, tuple) and len(source) == 2 and np.isscalar(source[1]):
        rate = check_sample_rate(source[1], "the sample rate in the (array, sampling_rate) tuple")
        if sampling_rate is not None and check_sample_rate(sampling_rate) != rate:
            raise InvalidInputError("sampling_rate given twice with different values (in the tuple and as argument)")
        data, channels_last = _as_array(source[0]), False
    elif isinstance(source, str | os.PathLike | bytes | bytearray):
        if sampling_rate is not None:
            raise InvalidInputError("sampling_rate applies to arrays only; a file carries its own sample rate")
        data, rate = _read_file(source)
        channels_last = True
    elif source is None:
        raise InvalidInputError("no audio given; pass a file path, file bytes, or an array with sampling_rate")
    else:
        if sampling_rate is None:
            raise InvalidInputError("an audio array needs its sample rate: pass sampling_rate=... "
                                    "or a (array, sampling_rate) tuple")
        rate = check_sample_rate(sampling_rate)
        data, channels_last = _as_array(source), False
    if rate <= 0:
        raise InvalidInputError(f"the sample rate must be a positive integer, got {rate}")
    if np.size(data) == 0:
        raise InvalidInputError(f"the audio is empty (shape {tuple(np.shape(data))}, 0 samples); pass a recording "
                                f"with sound in it")
    mono = _to_mono(np.asarray(data, dtype=np.float32), channels_last)
    if mono.size == 0:
        raise InvalidInputError("the audio is empty (0 samples); pass a recording with sound in it")
    if not np.isfinite(mono).all():
        raise InvalidInputError("the audio contains NaN or infinite samples")
    duration = mono.size / rate
    if max_seconds is not None and duration > max_seconds:
        raise InputTooLargeError(
            f"the audio is {duration:.1f} s long; the limit here is {max_seconds:g} s. Split it into shorter "
            f"pieces (the 'asr' pipeline splits long audio at silences by itself)"
        )
    if duration < min_seconds:
        raise InvalidInputError(f"the audio is {duration * 1000:.0f} ms long; at least {min_seconds * 1000:.0f} ms "
                                f"is needed")
    peak = float(np.abs(mono).max())
    if peak > 1.0 + 1e-3:
        log.warning("audio peak %.2f exceeds full scale; is it float audio scaled to int16 range?", peak)
    if not allow_silent and peak < SILENCE_PEAK:
        raise InvalidInputError(f"the audio is silent (peak amplitude {peak:.3g}); pass a recording that contains "
                                f"sound")
    return AudioClip(resample(mono, rate, target_rate), target_rate)


def save_audio(path: str | os.PathLike[str], samples: np.ndarray, sample_rate: int) -> Path:
    """Write mono float32 ``samples`` as a 16-bit PCM file (format from the suffix; wav by default)."""
    sf = _soundfile()
    path = Path(path)
    if path.parent and not path.parent.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
    fmt = None if path.suffix.lower() in {".wav", ".flac", ".ogg"} else "WAV"
    subtype = "PCM_16" if path.suffix.lower() in {".wav", ".flac", ""} or fmt == "WAV" else None
    sf.write(str(path), np.clip(np.asarray(samples, dtype=np.float32), -1.0, 1.0), int(sample_rate),
             format=fmt, subtype=subtype)
    return path
