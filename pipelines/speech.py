"""Speech pipelines on LFM2-Audio: ``speech-to-speech`` (``s2s``), ``asr`` and ``tts``.

>>> import tempfile, numpy as np, mm, mm.testing
>>> path = mm.testing.make_tiny_lfm2_audio(tempfile.mkdtemp())
>>> s2s = mm.pipeline("s2s", model=path, dtype="float32")
>>> wave = np.sin(np.linspace(0, 2000, 16000)).astype("float32")
>>> reply = s2s((wave, 16000), max_new_tokens=20)
>>> reply.sample_rate, reply.audio.dtype, reply.audio_codes.shape[1]
(24000, dtype('float32'), 8)
>>> pieces = list(s2s.stream((wave, 16000), max_new_tokens=20))   # str text pieces and AudioChunk objects

Results are :class:`mm.results.GenerationResult` s: ``.text``, ``.token_ids`` (the text tokens),
``.stop_reason``, ``.usage`` and ``.timings``; speech replies add ``.audio`` (float32 mono at
``.sample_rate`` = 24000) and ``.audio_codes`` (the decoded frames, ``[frames, 8]``; end-of-audio
frames and frames with a 2048 code are not decoded, as in the official demo).

>>> sorted(reply.usage)
['audio_frames', 'audio_input_tokens', 'generated_tokens', 'prompt_tokens', 'text_tokens']

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

import contextlib
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mm import options as opts
from mm.backbone import check_engine, cut_at_stop
from mm.base import Pipeline
from mm.errors import InvalidInputError
from mm.media.audio import AudioClip, load_audio
from mm.results import GenerationResult
from mm.validation import check_optional_text, check_text

log = logging.getLogger(__name__)

OUTPUT_RATE = 24000
INPUT_RATE = 16000
DEFAULT_S2S_PROMPT = "Respond with interleaved text and audio."
ASR_PROMPT = "Perform ASR."
TTS_VOICES = ("US male", "US female", "UK male", "UK female")
#: sampling defaults used with do_sample=True when a knob is not given (the official demo's audio setting)
#: how Mimi decodes the reply: on a background thread overlapped with generation, or inline between steps
AUDIO_DECODE = ("thread", "inline")
SAMPLING_DEFAULTS = {"temperature": 1.0, "top_k": None, "top_p": None, "audio_temperature": 1.0, "audio_top_k": 4}

#: audio-only sampling knobs (speech-to-speech and TTS)
AUDIO_SAMPLING_OPTIONS = (
    opts.Option("audio_temperature", None, "forward", opts.optional(opts.positive_float),
                "sampling temperature of the audio codes (do_sample=True; default 1.0)"),
    opts.Option("audio_top_k", None, "forward", opts.optional(opts.positive_int),
                "keep the k most likely codes per codebook (do_sample=True; default 4)"),
)
SAMPLING_RATE = opts.Option("sampling_rate", None, "preprocess", opts.optional(opts.positive_int),
                            "sample rate of a bare array input")
#: how generation ended, as the audio loop reports it -> the result family's stop_reason
_STOP_REASONS = {"im_end": "eos", "end_of_audio": "eos", "audio_start": "eos", "stop": "stop",
                 "max_new_tokens": "max_new_tokens"}


@dataclass
class AudioChunk:
    """A piece of generated speech, yielded by ``.stream()`` as soon as its frame is decoded."""

    samples: np.ndarray
    sample_rate: int
    codes: tuple[int, ...]


@dataclass
class SpeechResult(GenerationResult):
    """A generated reply (speech-to-speech, TTS): text and speech.

    ``usage``: ``prompt_tokens`` (prompt positions), ``generated_tokens`` (steps: text tokens + audio
    frames), ``text_tokens``, ``audio_frames`` (decoded frames), ``audio_input_tokens`` (encoder positions
    of the input audio).
    """

    audio: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32), repr=False)
    sample_rate: int = OUTPUT_RATE
    audio_codes: np.ndarray = field(default_factory=lambda: np.zeros((0, 8), np.int64), repr=False)

    @property
    def duration(self) -> float:
        """Seconds of generated audio."""
        return len(self.audio) / float(self.sample_rate)

    def save(self, path: str | Path) -> Path:
        """Write the audio as a 16-bit wav/flac file."""
        from mm.media.audio import save_audio

        return save_audio(path, self.audio, self.sample_rate)


@dataclass
class TranscriptSegment:
    """One piece of a long recording transcribed on its own."""

    start: float
    end: float
    text: str


@dataclass
class ASRResult(GenerationResult):
    """A transcript; ``segments`` lists the pieces long audio was split into (one for short audio)."""

    segments: list[TranscriptSegment] = field(default_factory=list)


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
        self.prompt_positions = 0
        self.audio_in_positions = 0


def _is_one_audio(item: Any) -> bool:
    return isinstance(item, tuple) and len(item) == 2 and np.isscalar(item[1])


class _SpeechPipeline(Pipeline):
    """Shared loading, option checking and the streaming generation loop."""

    init_options = {"quantize": None, "threads": None, "engine": "auto"}
    batch_size = 1

    def setup(self, quantize=None, threads=None, engine="auto", audio_decode="thread", **_: Any) -> None:
        from mm.models.lfm2_audio import LFM2Audio

        #: backbone steps: "auto"/"fast" (mm.fast_decode) or "transformers" (Lfm2Model's forward)
        self.engine = check_engine(engine)
        if audio_decode not in AUDIO_DECODE:
            raise InvalidInputError(f"audio_decode must be one of {AUDIO_DECODE}, got {audio_decode!r}")
        #: Mimi decoding: "thread" (a background thread, overlapped with generation) or "inline"
        self.audio_decode = audio_decode
        self.bundle = LFM2Audio.load(self.model_id, device=self.device, dtype=self.dtype, quantize=quantize)

    def check_call(self, options: dict[str, Any]) -> None:
        opts.check_sampling(options)

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

        check_optional_text(options.get("system_prompt"), "system_prompt")
        if not options.get("do_sample", False):
            text = audio = SamplingSettings()
        else:
            knobs = {k: options.get(k) for k in SAMPLING_DEFAULTS}
            merged = {k: (v if v is not None else SAMPLING_DEFAULTS[k]) for k, v in knobs.items()}
            text = SamplingSettings(merged["temperature"], merged["top_k"], merged["top_p"])
            audio = SamplingSettings(merged["audio_temperature"], merged["audio_top_k"])
        return GenerationConfig(mode=mode, max_new_tokens=options["max_new_tokens"], text=text, audio=audio,
                                seed=options.get("seed")).validate()

    def _batched(self) -> bool:
        """Whether several prompts decode together (mm's fast loop on the CPU; not with engine='transformers')."""
        return self.engine != "transformers" and self.bundle.model.on_cpu

    def _decode_together(self, histories: list[Any], config: Any, **flags: bool) -> tuple[list[Any], float]:
        """Decode ``histories`` as one left-padded batch; return their rows and the seconds it took."""
        from mm.models.lfm2_audio_batch import generate_batch

        t0 = time.perf_counter()
        with self.bundle.lock:
            rows = generate_batch(self.bundle.model, histories, config, **flags)
        return rows, time.perf_counter() - t0

    def _runs(self, histories: list[Any], options: dict[str, Any], **flags: Any) -> list[_Run]:
        """One finished :class:`_Run` per prompt: decoded ``batch_size`` at a time when batching applies."""
        config = self._gen_config(options, "sequential")
        decode = {k: flags.pop(k) for k in ("decode_audio", "stop") if k in flags}
        runs = []
        size = self.batch_size if self._batched() else 1
        for start in range(0, len(histories), size):
            group = histories[start:start + size]
            rows, seconds = self._decode_together(group, config, **flags) if len(group) > 1 else ([None], 0.0)
            for history, row in zip(group, rows, strict=True):
                run = _Run()
                for _ in self._events(history, config, run, **flags, **decode, generated=row, batch_s=seconds):
                    pass
                runs.append(run)
        return runs

    def _result(self, run: _Run) -> SpeechResult:
        audio = np.concatenate(run.chunks).astype(np.float32) if run.chunks else np.zeros(0, np.float32)
        codes = np.asarray(run.frames, dtype=np.int64).reshape(-1, 8)
        return SpeechResult(run.text, list(run.token_ids), run.stop_reason, _usage(run), run.timings, audio,
                            OUTPUT_RATE, codes)

    # -- the loop ----------------------------------------------------------------------------
    def _special_ids(self) -> set[int]:
        from mm.encoders.audio_generate import AUDIO_START, IM_END, TEXT_END

        return set(self.bundle.tokenizer.all_special_ids) | {AUDIO_START, TEXT_END, IM_END}

    def _events(self, history: Any, config: Any, run: _Run, *, decode_audio: bool = True,
                stop_at_audio_start: bool = False, stop_after_audio: bool = False,
                stop: tuple[str, ...] = (), generated: Any = None, batch_s: float = 0.0) -> Iterator[Any]:
        """Generate on ``history``; yield ``str`` text pieces and :class:`AudioChunk` s, filling ``run``.

        ``stop``: strings that end the generation when the text reaches one (the text is cut before it);
        text pieces are then held back just long enough to never show a stop string.
        ``generated``: a :class:`mm.models.lfm2_audio_batch.BatchRow` already decoded with others in a
        batch (``batch_s`` seconds); its steps are turned into text and audio instead of generating.
        """
        import torch
        from mm.encoders.audio_generate import AUDIO_IN, AUDIO_START, END_OF_AUDIO, StepTimer, generate
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
        hold = max((len(x) for x in stop), default=1) - 1
        shown = 0  # characters of run.text yielded so far
        run.prompt_positions = len(history)
        run.audio_in_positions = sum(1 for m in history.modality if m == AUDIO_IN)
        t_start = time.perf_counter()
        codec_s = 0.0

        def audio(frames: list[DecodedFrame]) -> Iterator[AudioChunk]:
            for frame in frames:
                run.chunks.append(frame.samples)
                if generated is None:
                    run.timings.setdefault("first_audio_s", time.perf_counter() - t_start)
                yield AudioChunk(frame.samples, OUTPUT_RATE, frame.codes)

        with bundle.lock if generated is None else contextlib.nullcontext():
            if generated is None:
                steps = generate(bundle.model, history, config, timer=timer, info=info, engine=self.engine)
            else:
                steps, info["stop_reason"] = iter(generated.steps), generated.stop_reason
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
                        cut = cut_at_stop(text, stop) if stop else text
                        run.text = cut
                        end = len(cut) if len(cut) < len(text) else max(shown, len(cut) - hold)
                        if end > shown:
                            if generated is None:
                                run.timings.setdefault("first_text_s", time.perf_counter() - t_start)
                            yield cut[shown:end]
                            shown = end
                        if len(cut) < len(text):
                            info["stop_reason"] = "stop"
                            break
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
                if generated is None:
                    steps.close()
                if decoder is not None:
                    decoder.close()
        if shown < len(run.text):
            yield run.text[shown:]
        run.stop_reason = _STOP_REASONS[info.get("stop_reason", "max_new_tokens")]
        elapsed = time.perf_counter() - t_start
        run.timings.update({f"{k}_s": v for k, v in timer.seconds.items()})
        run.timings.update({"generate_s": elapsed - codec_s + batch_s, "codec_s": codec_s})


class SpeechToSpeechPipeline(_SpeechPipeline):
    """Spoken conversation: audio in, text + speech out (``mode`` ``interleaved`` or ``sequential``).

    Call options (see :data:`SpeechToSpeechPipeline.call_options`): the shared generation options
    (``max_new_tokens`` counts steps: one text token or one 80 ms frame each; ``stop`` ends the reply
    when its text reaches a stop string), ``audio_temperature``/``audio_top_k``, ``system_prompt``,
    ``sampling_rate`` (for arrays), ``conversation`` (from :meth:`conversation`, for multi-turn chat).
    Build options besides ``quantize``/``threads``/``engine``: ``mode``, ``max_input_seconds``,
    ``audio_decode`` (``"thread"`` or ``"inline"``).
    """

    task = "speech-to-speech"
    init_options = {"quantize": None, "threads": None, "engine": "auto", "mode": "interleaved",
                    "max_input_seconds": 60.0, "audio_decode": "thread"}
    call_options = opts.options(
        opts.GENERATION_OPTIONS, AUDIO_SAMPLING_OPTIONS,
        (opts.Option("system_prompt", None, "preprocess", opts.optional(opts.text),
                     f"the system turn (default {DEFAULT_S2S_PROMPT!r}; set by conversation() in multi-turn use)"),
         SAMPLING_RATE,
         opts.Option("conversation", None, "preprocess", None, "a Conversation from pipeline.conversation()")),
        max_new_tokens=512)

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

    def preprocess(self, item: Any, sampling_rate: int | None = None, system_prompt: str | None = None,
                   conversation: Conversation | None = None) -> tuple[Any, Conversation | None]:
        """Load the audio and build the prompt: ``(history, conversation)``."""
        clip = load_audio(item, sampling_rate, target_rate=INPUT_RATE, max_seconds=self.max_input_seconds,
                          min_seconds=0.01)
        if conversation is not None:
            if not isinstance(conversation, Conversation):
                raise InvalidInputError("conversation must come from pipeline.conversation()")
            if system_prompt is not None:
                raise InvalidInputError("system_prompt is set when the conversation starts: "
                                        "pipeline.conversation(system_prompt=...)")
            history = conversation.history
        else:
            history = self.bundle.new_history()
            history.add_turn("system", text=system_prompt or DEFAULT_S2S_PROMPT)
        history.add_turn("user", audio=clip.samples)
        history.new_turn("assistant")
        return history, conversation

    def _generate(self, prepared: tuple[Any, Conversation | None], options: dict[str, Any],
                  run: _Run) -> Iterator[Any]:
        config = self._gen_config(options, self.mode)
        history, conv = prepared
        yield from self._events(history, config, run, stop=options["stop"])
        if conv is not None:  # the official multi-turn recipe: append every step, then close the turn
            history.append(run.steps)
            history.end_turn()
            conv.turns += 1

    def _forward(self, batch: list[tuple[Any, Conversation | None]], **options: Any) -> list[SpeechResult]:
        results = []
        for prepared in batch:  # one at a time: a conversation grows with each reply
            run = _Run()
            for _ in self._generate(prepared, options, run):
                pass
            results.append(self._result(run))
        return results

    def _stream(self, item: Any, **options: Any) -> Iterator[Any]:
        prepared = self.preprocess(item, **self.stage_options(options, "preprocess"))
        yield from self._generate(prepared, self.stage_options(options, "forward"), _Run())


@dataclass
class _ASRItem:
    """One recording after loading: its clip and the prompt of each piece ``(start, end, history)``."""

    clip: AudioClip
    pieces: list[tuple[int, int, Any]]


class ASRPipeline(_SpeechPipeline):
    """Speech recognition with LFM2-Audio's own prompt (system ``Perform ASR.``, the audio as user turn).

    Audio longer than ``chunk_seconds`` is split at silences found by silero-vad; each piece is
    transcribed separately and the texts are joined. A list of recordings is a batch: all their pieces
    are decoded together (left-padded, masked). Call options: the shared text generation options
    (``max_new_tokens`` per piece), ``sampling_rate``.
    """

    task = "asr"
    init_options = {"quantize": None, "threads": None, "engine": "auto", "chunk_seconds": 30.0,
                    "max_input_seconds": 4 * 3600.0, "batch_size": 8}
    call_options = opts.options(opts.GENERATION_OPTIONS, (SAMPLING_RATE,), max_new_tokens=512)

    def setup(self, quantize=None, threads=None, engine="auto", chunk_seconds=30.0,
              max_input_seconds=4 * 3600.0, batch_size=8) -> None:
        if not isinstance(chunk_seconds, int | float) or not 1.0 <= chunk_seconds <= 120.0:
            raise InvalidInputError(f"chunk_seconds must be between 1 and 120, got {chunk_seconds!r}")
        self.chunk_seconds = float(chunk_seconds)
        self.max_input_seconds = float(max_input_seconds)
        self.batch_size = opts.positive_int(batch_size, "batch_size")
        super().setup(quantize=quantize, threads=threads, engine=engine)

    def preprocess(self, item: Any, sampling_rate: int | None = None) -> _ASRItem:
        """Load the audio, split long audio at silences and build each piece's prompt."""
        clip = load_audio(item, sampling_rate, target_rate=INPUT_RATE, max_seconds=self.max_input_seconds,
                          min_seconds=0.01)
        pieces = []
        for start, end in self.pieces(clip):
            history = self.bundle.new_history()
            history.add_turn("system", text=ASR_PROMPT)
            history.add_turn("user", audio=clip.samples[start:end])
            history.new_turn("assistant")
            pieces.append((start, end, history))
        return _ASRItem(clip, pieces)

    def pieces(self, clip: AudioClip) -> list[tuple[int, int]]:
        """Sample ranges to transcribe: the whole clip when short, else VAD speech spans of <= chunk_seconds."""
        from mm.media.vad import split_at_silences

        return split_at_silences(clip.samples, clip.sample_rate, self.chunk_seconds)

    def _transcribe(self, item: _ASRItem, options: dict[str, Any], runs: list[tuple[int, int, _Run]]):
        config = self._gen_config(options, "sequential")
        for start, end, history in item.pieces:
            run = _Run()
            runs.append((start, end, run))
            if runs[:-1] and runs[-2][2].text:
                yield " "
            yield from self._events(history, config, run, decode_audio=False, stop_at_audio_start=True,
                                    stop=options["stop"])

    def _transcript(self, item: _ASRItem, runs: list[tuple[int, int, _Run]]) -> ASRResult:
        rate = item.clip.sample_rate
        segments = [TranscriptSegment(s / rate, e / rate, run.text.strip()) for s, e, run in runs]
        text = " ".join(seg.text for seg in segments if seg.text)
        ids = [t for _, _, run in runs for t in run.token_ids]
        reasons = [run.stop_reason for _, _, run in runs]
        reason = next((r for r in reasons if r != "eos"), "eos")
        usage = {k: sum(_usage(run)[k] for _, _, run in runs)
                 for k in ("prompt_tokens", "generated_tokens", "text_tokens", "audio_input_tokens")}
        timings = {"generate_s": sum(run.timings.get("generate_s", 0.0) for _, _, run in runs)}
        return ASRResult(text, ids, reason, usage, timings, segments)

    def _forward(self, batch: list[_ASRItem], **options: Any) -> list[ASRResult]:
        """Transcribe the pieces of every recording in the batch, ``batch_size`` pieces decoded together."""
        pieces = [(i, start, end, history) for i, item in enumerate(batch) for start, end, history in item.pieces]
        runs = self._runs([p[3] for p in pieces], options, decode_audio=False, stop_at_audio_start=True,
                          stop=options["stop"])
        per_item: list[list[tuple[int, int, _Run]]] = [[] for _ in batch]
        for (i, start, end, _), run in zip(pieces, runs, strict=True):
            per_item[i].append((start, end, run))
        return [self._transcript(item, item_runs) for item, item_runs in zip(batch, per_item, strict=True)]

    def _stream(self, item: Any, **options: Any) -> Iterator[str]:
        prepared = self.preprocess(item, **self.stage_options(options, "preprocess"))
        yield from self._transcribe(prepared, self.stage_options(options, "forward"), [])


class TTSPipeline(_SpeechPipeline):
    """Speech synthesis with LFM2-Audio's own prompt (system ``Perform TTS.``, the text as user turn).

    Sequential decoding; generation ends with the first end-of-audio frame (``stop_reason`` ``"eos"``).
    A list of texts is a batch, generated together. Call options: ``voice`` (one of ``US male``,
    ``US female``, ``UK male``, ``UK female``, or None for the plain prompt), ``system_prompt``
    (replaces the prompt), the shared generation options except ``stop`` (a TTS reply has no text),
    ``audio_temperature``/``audio_top_k``.
    """

    task = "tts"
    init_options = {"quantize": None, "threads": None, "engine": "auto", "batch_size": 8, "audio_decode": "thread"}
    call_options = opts.options(
        [o for o in opts.GENERATION_OPTIONS if o.name != "stop"], AUDIO_SAMPLING_OPTIONS,
        (opts.Option("voice", None, "preprocess", opts.optional(opts.one_of(*TTS_VOICES)), "the speaker's voice"),
         opts.Option("system_prompt", None, "preprocess", opts.optional(opts.text), "replaces the TTS prompt")),
        max_new_tokens=1024)
    max_text_chars = 4000

    def setup(self, quantize=None, threads=None, engine="auto", batch_size=8, audio_decode="thread") -> None:
        self.batch_size = opts.positive_int(batch_size, "batch_size")
        super().setup(quantize=quantize, threads=threads, engine=engine, audio_decode=audio_decode)

    def preprocess(self, item: Any, voice: str | None = None, system_prompt: str | None = None) -> Any:
        """Check the text and build the prompt (a chat history)."""
        if not isinstance(item, str):
            raise InvalidInputError(f"tts takes a string, got {type(item).__name__}")
        if not item.strip():
            raise InvalidInputError("the text is empty; pass something to say")
        check_text(item, "the text to speak")
        if len(item) > self.max_text_chars:
            from mm.errors import InputTooLargeError

            raise InputTooLargeError(f"the text has {len(item)} characters; the limit is {self.max_text_chars}. "
                                     f"Split it into paragraphs and synthesise them one by one")
        history = self.bundle.new_history()
        history.add_turn("system", text=self.system_prompt(voice, system_prompt))
        history.add_turn("user", text=item.strip())
        history.new_turn("assistant")
        return history

    @staticmethod
    def system_prompt(voice: str | None, system_prompt: str | None) -> str:
        """The TTS system prompt for ``voice`` (``system_prompt`` overrides it)."""
        if system_prompt is not None and voice is not None:
            raise InvalidInputError("pass either voice or system_prompt, not both")
        if system_prompt is not None:
            return check_text(system_prompt, "system_prompt")
        if voice is None:
            return "Perform TTS."
        if voice not in TTS_VOICES:
            raise InvalidInputError(f"unknown voice {voice!r}; valid: {', '.join(TTS_VOICES)}")
        return f"Perform TTS. Use the {voice} voice."

    def _generate(self, history: Any, options: dict[str, Any], run: _Run) -> Iterator[Any]:
        config = self._gen_config(options, "sequential")
        yield from self._events(history, config, run, stop_after_audio=True)

    def _forward(self, batch: list[Any], **options: Any) -> list[SpeechResult]:
        """Synthesise the batch's texts, decoded together (left-padded prompts, one backbone step per frame)."""
        return [self._result(run) for run in self._runs(list(batch), options, stop_after_audio=True)]

    def _stream(self, item: Any, **options: Any) -> Iterator[Any]:
        prepared = self.preprocess(item, **self.stage_options(options, "preprocess"))
        yield from self._generate(prepared, self.stage_options(options, "forward"), _Run())


def _usage(run: _Run) -> dict[str, int]:
    """The token counts of one generation."""
    return {"prompt_tokens": run.prompt_positions, "generated_tokens": len(run.steps),
            "text_tokens": len(run.token_ids), "audio_frames": len(run.frames),
            "audio_input_tokens": run.audio_in_positions}
