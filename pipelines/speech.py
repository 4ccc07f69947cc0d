"""Speech pipelines on LFM2-Audio: ``speech-to-speech`` (``s2s``), ``asr`` and ``tts``.

>>> import tempfile, numpy as np, mm, mm.testing
>>> path = mm.testing.make_tiny_lfm2_audio(tempfile.mkdtemp())
>>> s2s = mm.pipeline("s2s", model=path, dtype="float32")
>>> wave = np.sin(np.linspace(0, 2000, 16000)).astype("float32")
>>> reply = s2s((wave, 16000), max_new_tokens=20)
>>> reply.sample_rate, reply.audio.dtype, reply.audio_codes.shape[1]
(24000, dtype('float32'), 8)
>>> pieces = list(s2s.stream((wave, 16000), max_new_tokens=20))   # str text pieces and AudioChunk objects

Results carry ``.text``, ``.audio`` (float32 mono at ``.sample_rate`` = 24000), ``.text_token_ids``,
``.audio_codes`` (the decoded frames, ``[frames, 8]``; end-of-audio frames and frames with a 2048
code are not decoded, as in the official demo), ``.stop_reason`` and ``.timings``.

Audio is decoded by Mimi on a background thread while generation goes on (``audio_decode="thread"``, the
default for speech-to-speech and TTS; frames that queue up are decoded together), or between steps
(``audio_decode="inline"``); ``.stream()`` yields each 80 ms chunk once it is decoded. With
``quantize="int8"`` the backbone, the depth transformer and the Mimi decoder all run int8 weights (see
docs/speech-realtime.md).

Limits: speech-to-speech takes at most ``max_input_seconds`` (default 60 s) of input and raises
:class:`mm.errors.InputTooLargeError` beyond it; ASR splits longer audio at silences found by
silero-vad into pieces of at most ``chunk_seconds`` (default 30 s) and transcribes each.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mm.backbone import check_engine
from mm.base import Pipeline
from mm.errors import InvalidInputError
from mm.media.audio import AudioClip, load_audio

log = logging.getLogger(__name__)

OUTPUT_RATE = 24000
INPUT_RATE = 16000
DEFAULT_S2S_PROMPT = "Respond with interleaved text and audio."
ASR_PROMPT = "Perform ASR."
TTS_VOICES = ("US male", "US female", "UK male", "UK female")
#: sampling defaults used with do_sample=True when a knob is not given (the official demo's audio setting)
#: how Mimi decodes the reply: on a background thread overlapped with generation, or inline between steps
AUDIO_DECODE = ("thread", "inline")
SAMPLING_DEFAULTS = {"text_temperature": 1.0, "text_top_k": None, "audio_temperature": 1.0, "audio_top_k": 4}


@dataclass
class AudioChunk:
    """A piece of generated speech, yielded by ``.stream()`` as soon as its frame is decoded."""

    samples: np.ndarray
    sample_rate: int
    codes: tuple[int, ...]


@dataclass
class SpeechResult:
    """A generated reply (speech-to-speech, TTS)."""

    text: str
    audio: np.ndarray
    sample_rate: int
    text_token_ids: list[int]
    audio_codes: np.ndarray
    stop_reason: str
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def duration(self) -> float:
        return len(self.audio) / float(self.sample_rate)

    def save(self, path: str | Path) -> Path:
        """Write the audio as a 16-bit wav/flac file."""
        from mm.media.audio import save_audio

        return save_audio(path, self.audio, self.sample_rate)

    def __str__(self) -> str:
        return self.text


@dataclass
class TranscriptSegment:
    """One piece of a long recording transcribed on its own."""

    start: float
    end: float
    text: str


@dataclass
class ASRResult:
    """A transcript; ``segments`` lists the pieces long audio was split into (one for short audio)."""

    text: str
    text_token_ids: list[int]
    segments: list[TranscriptSegment]
    timings: dict[str, float] = field(default_factory=dict)

    def __str__(self) -> str:
        return self.text


class Conversation:
    """A multi-turn speech conversation: the model's chat history, grown by every call.

    >>> conv = s2s.conversation()               # doctest: +SKIP
    >>> s2s("question.wav", conversation=conv)  # doctest: +SKIP
    >>> s2s("follow_up.wav", conversation=conv) # doctest: +SKIP
    """

    def __init__(self, history: Any, system_prompt: str | None) -> None:
        self.history = history
        self.system_prompt = system_prompt
        self.turns = 0


class _Run:
    """The state of one generation as it streams: token ids, frames, audio chunks, timings."""

    def __init__(self) -> None:
        self.token_ids: list[int] = []
        self.steps: list[Any] = []
        self.frames: list[tuple[int, ...]] = []
        self.chunks: list[np.ndarray] = []
        self.text = ""
        self.stop_reason = "max_new_tokens"
        self.timings: dict[str, float] = {}


def _is_one_audio(item: Any) -> bool:
    return isinstance(item, tuple) and len(item) == 2 and np.isscalar(item[1])


class _SpeechPipeline(Pipeline):
    """Shared loading, option checking and the streaming generation loop."""

    init_options = {"quantize": None, "threads": None, "engine": "auto"}
    batch_size = 1
    sampling_knobs: tuple[str, ...] = ("text_temperature", "text_top_k", "audio_temperature", "audio_top_k")

    def setup(self, quantize=None, threads=None, engine="auto", audio_decode="thread", **_: Any) -> None:
        from mm.encoders.lfm2_audio import LFM2Audio

        #: backbone steps: "auto"/"fast" (mm.fast_decode) or "transformers" (Lfm2Model's forward)
        self.engine = check_engine(engine)
        if audio_decode not in AUDIO_DECODE:
            raise InvalidInputError(f"audio_decode must be one of {AUDIO_DECODE}, got {audio_decode!r}")
        #: Mimi decoding: "thread" (a background thread, overlapped with generation) or "inline"
        self.audio_decode = audio_decode
        self.bundle = LFM2Audio.load(self.model_id, device=self.device, dtype=self.dtype, quantize=quantize,
                                     threads=threads)

    # -- inputs ----------------------------------------------------------------------------
    def is_batch(self, inputs: Any) -> bool:
        if _is_one_audio(inputs) or isinstance(inputs, np.ndarray | str | bytes | Path | AudioClip):
            return False
        if not isinstance(inputs, list | tuple):
            return False
        return not all(isinstance(x, int | float | np.number) and not isinstance(x, bool) for x in inputs)

    # -- settings ----------------------------------------------------------------------------
    def _gen_config(self, options: dict[str, Any], mode: str):
        from mm.encoders.audio_generate import GenerationConfig
        from mm.encoders.audio_out import SamplingSettings

        knobs = {k: options.get(k) for k in self.sampling_knobs}
        if not options.get("do_sample", False):
            given = [k for k, v in knobs.items() if v is not None]
            if given:
                raise InvalidInputError(f"{', '.join(given)} only apply when sampling; pass do_sample=True "
                                        f"or drop them")
            text = audio = SamplingSettings()
        else:
            merged = {k: (v if v is not None else SAMPLING_DEFAULTS[k]) for k, v in knobs.items()}
            text = SamplingSettings(merged.get("text_temperature", 1.0), merged.get("text_top_k"))
            audio = SamplingSettings(merged.get("audio_temperature", 1.0), merged.get("audio_top_k"))
        seed = options.get("seed")
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
            raise InvalidInputError(f"seed must be an integer, got {seed!r}")
        return GenerationConfig(mode=mode, max_new_tokens=options["max_new_tokens"], text=text, audio=audio,
                                seed=seed).validate()

    # -- the loop ----------------------------------------------------------------------------
    def _special_ids(self) -> set[int]:
        from mm.encoders.audio_generate import AUDIO_START, IM_END, TEXT_END

        return set(self.bundle.tokenizer.all_special_ids) | {AUDIO_START, TEXT_END, IM_END}

    def _events(self, history: Any, config: Any, run: _Run, *, decode_audio: bool = True,
                stop_at_audio_start: bool = False, stop_after_audio: bool = False) -> Iterator[Any]:
        """Generate on ``history``; yield ``str`` text pieces and :class:`AudioChunk` s, filling ``run``."""
        import torch
        from mm.encoders.audio_generate import AUDIO_START, END_OF_AUDIO, StepTimer, generate
        from mm.encoders.mimi_worker import BackgroundDecoder, DecodedFrame

        bundle = self.bundle
        special = self._special_ids()
        decoder = stream = None
        if decode_audio and self.audio_decode == "thread":
            decoder = BackgroundDecoder(bundle.codec.stream())
        elif decode_audio:
            stream = bundle.codec.stream()
        timer = StepTimer()
        info: dict[str, Any] = {}
        visible: list[int] = []
        t_start = time.perf_counter()
        codec_s = 0.0

        def audio(frames: list[DecodedFrame]) -> Iterator[AudioChunk]:
            for frame in frames:
                run.chunks.append(frame.samples)
                run.timings.setdefault("first_audio_s", time.perf_counter() - t_start)
                yield AudioChunk(frame.samples, OUTPUT_RATE, frame.codes)

        with bundle.lock:
            steps = generate(bundle.model, history, config, timer=timer, info=info, engine=self.engine)
            try:
                for step in steps:
                    if decoder is not None:  # frames the background thread finished meanwhile
                        yield from audio(decoder.poll())
                    run.steps.append(step)
                    if step.kind == "text":
                        run.token_ids.append(step.token)
                        if stop_at_audio_start and step.token == AUDIO_START:
                            info["stop_reason"] = "audio_start"
                            break
                        if step.token in special:
                            continue
                        visible.append(step.token)
                        text = bundle.tokenizer.decode(visible, skip_special_tokens=True)
                        if text.endswith("\ufffd"):
                            continue  # an incomplete UTF-8 sequence: wait for the next token
                        piece, run.text = text[len(run.text):], text
                        if piece:
                            run.timings.setdefault("first_text_s", time.perf_counter() - t_start)
                            yield piece
                        continue
                    if step.codes[0] == END_OF_AUDIO:
                        if stop_after_audio:
                            info["stop_reason"] = "end_of_audio"
                            break
                        continue
                    if END_OF_AUDIO in step.codes:
                        log.debug("skipping a frame with code 2048 outside codebook 0 (not decodable)")
                        continue
                    run.frames.append(step.codes)
                    if decoder is not None:
                        decoder.submit(step.codes)
                        if len(run.frames) == 1:  # the listener waits for the first chunk: do not defer it
                            yield from audio(decoder.finish())
                    elif stream is not None:
                        t0 = time.perf_counter()
                        with torch.inference_mode():
                            samples = stream.decode_frame(torch.tensor(step.codes, dtype=torch.long))
                        samples = samples.float().numpy().copy()
                        codec_s += time.perf_counter() - t0
                        yield from audio([DecodedFrame(step.codes, samples)])
                if decoder is not None:
                    yield from audio(decoder.finish())
                    codec_s = decoder.seconds
            finally:
                steps.close()
                if decoder is not None:
                    decoder.close()
        run.stop_reason = info.get("stop_reason", "max_new_tokens")
        elapsed = time.perf_counter() - t_start
        audio_s = len(run.frames) * 1920 / OUTPUT_RATE
        run.timings.update({f"{k}_s": v for k, v in timer.seconds.items()})
        run.timings.update({"generate_s": elapsed, "codec_s": codec_s, "steps": float(len(run.steps)),
                            "audio_s": audio_s})
        if audio_s:
            run.timings["rtf"] = elapsed / audio_s

    def _speech_result(self, run: _Run) -> SpeechResult:
        audio = np.concatenate(run.chunks).astype(np.float32) if run.chunks else np.zeros(0, np.float32)
        codes = np.asarray(run.frames, dtype=np.int64).reshape(-1, 8)
        return SpeechResult(run.text, audio, OUTPUT_RATE, list(run.token_ids), codes, run.stop_reason, run.timings)


class SpeechToSpeechPipeline(_SpeechPipeline):
    """Spoken conversation: audio in, text + speech out (``mode`` ``interleaved`` or ``sequential``).

    Call options: ``system_prompt``, ``max_new_tokens`` (steps: one text token or one 80 ms frame each),
    ``do_sample`` with ``text_temperature``/``text_top_k``/``audio_temperature``/``audio_top_k``, ``seed``,
    ``sampling_rate`` (for arrays), ``conversation`` (from :meth:`conversation`, for multi-turn chat).
    Build options besides ``quantize``/``threads``/``engine``: ``mode``, ``max_input_seconds``,
    ``audio_decode`` (``"thread"`` or ``"inline"``).
    """

    task = "speech-to-speech"
    init_options = {"quantize": None, "threads": None, "engine": "auto", "mode": "interleaved",
                    "max_input_seconds": 60.0, "audio_decode": "thread"}
    call_options = {"system_prompt": None, "max_new_tokens": 512, "do_sample": False, "text_temperature": None,
                    "text_top_k": None, "audio_temperature": None, "audio_top_k": None, "seed": None,
                    "sampling_rate": None, "conversation": None}

    def setup(self, quantize=None, threads=None, engine="auto", mode="interleaved", max_input_seconds=60.0,
              audio_decode="thread") -> None:
        from mm.encoders.audio_generate import MODES

        if mode not in MODES:
            raise InvalidInputError(f"mode must be one of {MODES}, got {mode!r}")
        if not isinstance(max_input_seconds, int | float) or max_input_seconds <= 0:
            raise InvalidInputError(f"max_input_seconds must be a positive number, got {max_input_seconds!r}")
        self.mode = mode
        self.max_input_seconds = float(max_input_seconds)
        super().setup(quantize=quantize, threads=threads, engine=engine, audio_decode=audio_decode)

    def conversation(self, system_prompt: str | None = DEFAULT_S2S_PROMPT) -> Conversation:
        """Start a multi-turn conversation (pass it as ``conversation=`` to each call)."""
        history = self.bundle.new_history()
        if system_prompt:
            history.add_turn("system", text=system_prompt)
        return Conversation(history, system_prompt)

    def preprocess(self, item: Any, sampling_rate: int | None = None, **_: Any) -> AudioClip:
        return load_audio(item, sampling_rate, target_rate=INPUT_RATE, max_seconds=self.max_input_seconds,
                          min_seconds=0.01)

    def _prepare(self, clip: AudioClip, options: dict[str, Any]) -> tuple[Any, Conversation | None]:
        conv = options.get("conversation")
        if conv is not None:
            if not isinstance(conv, Conversation):
                raise InvalidInputError("conversation must come from pipeline.conversation()")
            if options.get("system_prompt") is not None:
                raise InvalidInputError("system_prompt is set when the conversation starts: "
                                        "pipeline.conversation(system_prompt=...)")
            history = conv.history
        else:
            history = self.bundle.new_history()
            prompt = options.get("system_prompt") or DEFAULT_S2S_PROMPT
            history.add_turn("system", text=prompt)
        history.add_turn("user", audio=clip.samples)
        history.new_turn("assistant")
        return history, conv

    def _generate(self, clip: AudioClip, options: dict[str, Any], run: _Run) -> Iterator[Any]:
        config = self._gen_config(options, self.mode)
        history, conv = self._prepare(clip, options)
        yield from self._events(history, config, run)
        if conv is not None:  # the official multi-turn recipe: append every step, then close the turn
            history.append(run.steps)
            history.end_turn()
            conv.turns += 1

    def _forward(self, batch: list[AudioClip], **options: Any) -> list[SpeechResult]:
        results = []
        for clip in batch:
            run = _Run()
            for _ in self._generate(clip, options, run):
                pass
            results.append(self._speech_result(run))
        return results

    def _stream(self, item: Any, **options: Any) -> Iterator[Any]:
        yield from self._generate(self.preprocess(item, **options), options, _Run())


class ASRPipeline(_SpeechPipeline):
    """Speech recognition with LFM2-Audio's own prompt (system ``Perform ASR.``, the audio as user turn).

    Audio longer than ``chunk_seconds`` is split at silences found by silero-vad; each piece is
    transcribed separately and the texts are joined. Call options: ``max_new_tokens`` (per piece),
    ``do_sample`` with ``text_temperature``/``text_top_k``, ``seed``, ``sampling_rate``.
    """

    task = "asr"
    init_options = {"quantize": None, "threads": None, "engine": "auto", "chunk_seconds": 30.0,
                    "max_input_seconds": 4 * 3600.0}
    call_options = {"max_new_tokens": 512, "do_sample": False, "text_temperature": None, "text_top_k": None,
                    "seed": None, "sampling_rate": None}
    sampling_knobs = ("text_temperature", "text_top_k")

    def setup(self, quantize=None, threads=None, engine="auto", chunk_seconds=30.0,
              max_input_seconds=4 * 3600.0) -> None:
        if not isinstance(chunk_seconds, int | float) or not 1.0 <= chunk_seconds <= 120.0:
            raise InvalidInputError(f"chunk_seconds must be between 1 and 120, got {chunk_seconds!r}")
        self.chunk_seconds = float(chunk_seconds)
        self.max_input_seconds = float(max_input_seconds)
        super().setup(quantize=quantize, threads=threads, engine=engine)

    def preprocess(self, item: Any, sampling_rate: int | None = None, **_: Any) -> AudioClip:
        return load_audio(item, sampling_rate, target_rate=INPUT_RATE, max_seconds=self.max_input_seconds,
                          min_seconds=0.01)

    def pieces(self, clip: AudioClip) -> list[tuple[int, int]]:
        """Sample ranges to transcribe: the whole clip when short, else VAD speech spans of <= chunk_seconds."""
        from mm.media.vad import split_at_silences

        return split_at_silences(clip.samples, clip.sample_rate, self.chunk_seconds)

    def _transcribe(self, clip: AudioClip, options: dict[str, Any], runs: list[tuple[int, int, _Run]]):
        config = self._gen_config(options, "sequential")
        for start, end in self.pieces(clip):
            history = self.bundle.new_history()
            history.add_turn("system", text=ASR_PROMPT)
            history.add_turn("user", audio=clip.samples[start:end])
            history.new_turn("assistant")
            run = _Run()
            runs.append((start, end, run))
            if runs[:-1] and runs[-2][2].text:
                yield " "
            yield from self._events(history, config, run, decode_audio=False, stop_at_audio_start=True)

    def _result(self, clip: AudioClip, runs: list[tuple[int, int, _Run]]) -> ASRResult:
        rate = clip.sample_rate
        segments = [TranscriptSegment(s / rate, e / rate, run.text.strip()) for s, e, run in runs]
        text = " ".join(seg.text for seg in segments if seg.text)
        ids = [t for _, _, run in runs for t in run.token_ids]
        timings = {"generate_s": sum(run.timings.get("generate_s", 0.0) for _, _, run in runs),
                   "pieces": float(len(runs))}
        return ASRResult(text, ids, segments, timings)

    def _forward(self, batch: list[AudioClip], **options: Any) -> list[ASRResult]:
        results = []
        for clip in batch:
            runs: list[tuple[int, int, _Run]] = []
            for _ in self._transcribe(clip, options, runs):
                pass
            results.append(self._result(clip, runs))
        return results

    def _stream(self, item: Any, **options: Any) -> Iterator[str]:
        yield from self._transcribe(self.preprocess(item, **options), options, [])


class TTSPipeline(_SpeechPipeline):
    """Speech synthesis with LFM2-Audio's own prompt (system ``Perform TTS.``, the text as user turn).

    Sequential decoding; generation ends with the first end-of-audio frame (``stop_reason``
    ``"end_of_audio"``). Call options: ``voice`` (one of ``US male``, ``US female``, ``UK male``,
    ``UK female``, or None for the plain prompt), ``system_prompt`` (replaces the prompt),
    ``max_new_tokens``, sampling knobs as for speech-to-speech, ``seed``.
    """

    task = "tts"
    init_options = {"quantize": None, "threads": None, "engine": "auto", "audio_decode": "thread"}
    call_options = {"voice": None, "system_prompt": None, "max_new_tokens": 1024, "do_sample": False,
                    "text_temperature": None, "text_top_k": None, "audio_temperature": None, "audio_top_k": None,
                    "seed": None}
    max_text_chars = 4000

    def preprocess(self, item: Any, **_: Any) -> str:
        if not isinstance(item, str):
            raise InvalidInputError(f"tts takes a string, got {type(item).__name__}")
        if not item.strip():
            raise InvalidInputError("the text is empty; pass something to say")
        if len(item) > self.max_text_chars:
            from mm.errors import InputTooLargeError

            raise InputTooLargeError(f"the text has {len(item)} characters; the limit is {self.max_text_chars}. "
                                     f"Split it into paragraphs and synthesise them one by one")
        return item.strip()

    @staticmethod
    def system_prompt(voice: str | None, system_prompt: str | None) -> str:
        """The TTS system prompt for ``voice`` (``system_prompt`` overrides it)."""
        if system_prompt is not None and voice is not None:
            raise InvalidInputError("pass either voice or system_prompt, not both")
        if system_prompt is not None:
            return system_prompt
        if voice is None:
            return "Perform TTS."
        if voice not in TTS_VOICES:
            raise InvalidInputError(f"unknown voice {voice!r}; valid: {', '.join(TTS_VOICES)}")
        return f"Perform TTS. Use the {voice} voice."

    def _generate(self, text: str, options: dict[str, Any], run: _Run) -> Iterator[Any]:
        config = self._gen_config(options, "sequential")
        history = self.bundle.new_history()
        history.add_turn("system", text=self.system_prompt(options.get("voice"), options.get("system_prompt")))
        history.add_turn("user", text=text)
        history.new_turn("assistant")
        yield from self._events(history, config, run, stop_after_audio=True)

    def _forward(self, batch: list[str], **options: Any) -> list[SpeechResult]:
        results = []
        for text in batch:
            run = _Run()
            for _ in self._generate(text, options, run):
                pass
            results.append(self._speech_result(run))
        return results

    def _stream(self, item: Any, **options: Any) -> Iterator[Any]:
        yield from self._generate(self.preprocess(item), options, _Run())
