"""The speech app: a spoken conversation (speech in, text + speech out), plus ASR and TTS tabs.

>>> app = build_speech_app(None)         # no model: each tab explains how to start it with one
>>> type(app).__name__
'Blocks'

Start it from the command line with ``mm serve --task speech --speech-model DIR``.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
import uuid
from collections.abc import Iterator
from typing import Any

import gradio as gr
import numpy as np
from mm.apps.common import (
    AppLimits,
    ModelSlot,
    check_new_tokens,
    check_text,
    fmt_seconds,
    load_audio,
    prepare,
    status_html,
    stream_in_thread,
    upload_path,
    user_errors,
)

from mm.errors import InvalidInputError, MissingDependencyError

log = logging.getLogger(__name__)

MODES = ("interleaved", "sequential")
MODE_HELP = "interleaved: text and speech come together, lowest latency · sequential: the full text, then speech"
DEFAULT_SYSTEM_PROMPT = "Respond with interleaved text and audio."
OUTPUT_RATE = 24000
#: turns one conversation may hold (the model's context grows with each)
MAX_TURNS = 20
DEFAULT_VOICE = "model default"
#: unless audio is streamed (Gradio's streamed output needs ffmpeg) the reply player is refreshed this often
REFRESH_SECONDS = 0.75
#: and the transcript at most this often while text streams
TEXT_REFRESH_SECONDS = 0.1


class SpeechModels:
    """The pipelines of one LFM2-Audio checkpoint, built on first use and sharing one copy of the weights."""

    def __init__(self, model: Any, *, device: str = "auto", dtype: str = "auto") -> None:
        self.model_id = os.fspath(model)
        self.device = device
        self.dtype = dtype
        self._pipes: dict[tuple[str, str | None], Any] = {}

    def _get(self, task: str, mode: str | None = None) -> Any:
        key = (task, mode)
        if key not in self._pipes:
            import mm

            options = {"mode": mode} if mode else {}
            self._pipes[key] = mm.pipeline(task, model=self.model_id, device=self.device, dtype=self.dtype,
                                           **options)
        return self._pipes[key]

    def s2s(self, mode: str) -> Any:
        if mode not in MODES:
            raise InvalidInputError(f"unknown mode {mode!r}; choose one of {', '.join(MODES)}")
        return self._get("speech-to-speech", mode)

    def asr(self) -> Any:
        return self._get("asr")

    def tts(self) -> Any:
        return self._get("tts")


def speech_slot(model: Any, *, concurrency_limit: int = 1, device: str = "auto", dtype: str = "auto") -> ModelSlot:
    """A slot for an LFM2-Audio checkpoint directory (or a ready :class:`SpeechModels`), or None."""

    def load(path: Any) -> SpeechModels:
        models = SpeechModels(path, device=device, dtype=dtype)
        models.s2s(MODES[0])  # load the weights now: a broken checkpoint shows up at start, not mid-chat
        return models

    return ModelSlot.of("speech", model, load, concurrency_limit=concurrency_limit,
                        missing_hint="Start the app with --speech-model DIR (an LFM2-Audio checkpoint folder).")


def ffmpeg_available() -> bool:
    """Whether ffmpeg, which Gradio's streamed audio output encodes with, is on PATH."""
    return shutil.which("ffmpeg") is not None


def _as_audio(chunk: Any) -> np.ndarray:
    audio = np.asarray(chunk, dtype=np.float32).reshape(-1)
    return np.clip(audio, -1.0, 1.0)


def _pcm16(audio: np.ndarray) -> np.ndarray:
    return (np.clip(audio, -1.0, 1.0) * 32767.0).astype(np.int16)


def _history_messages(turns: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Chatbot messages for the transcript: each user recording, each reply's text and audio."""
    messages: list[dict[str, Any]] = []
    for turn in turns:
        messages.append({"role": "user", "content": gr.Audio(value=turn["user_audio"], type="filepath")})
        if turn.get("reply_text"):
            messages.append({"role": "assistant", "content": turn["reply_text"]})
        if turn.get("reply_path"):
            messages.append({"role": "assistant", "content": gr.Audio(value=turn["reply_path"], type="filepath")})
    return messages


def _save_reply(audio: np.ndarray, sample_rate: int) -> str:
    """Write a finished reply once into Gradio's upload cache (the transcript then refers to the file)."""
    from gradio import processing_utils, utils

    return processing_utils.save_audio_to_cache(_pcm16(audio), sample_rate, format="wav",
                                                cache_dir=utils.get_upload_folder())


def new_session() -> dict[str, Any]:
    """Per-browser-session conversation state: the model's conversation and the transcript turns."""
    return {"conversation": None, "system_prompt": None, "turns": []}


def _audio_piece(piece: Any) -> tuple[np.ndarray, int | None]:
    """Samples (and rate, when the piece carries one) of a streamed audio piece: an AudioChunk or an array."""
    if hasattr(piece, "samples"):
        return _as_audio(piece.samples), int(getattr(piece, "sample_rate", 0)) or None
    return _as_audio(piece), None


def conversation_stream(slot: ModelSlot, limits: AppLimits, audio: Any, mode: str, system_prompt: str,
                        max_new_tokens: Any, session: dict[str, Any] | None, *,
                        stream_audio: bool) -> Iterator[tuple[Any, ...]]:
    """Answer one spoken turn of a multi-turn conversation.

    Yields ``(chat messages, reply audio, stats html, session, live chunk)`` as text and audio arrive
    (``live chunk``: each new audio chunk as ``reply:seq:rate:base64 PCM16``, which the page's WebAudio
    player schedules as it comes, see :data:`LIVE_PLAYER_JS`). The
    session keeps the model's conversation, so each turn sees the earlier ones; the system prompt
    is fixed when a conversation starts.
    """
    clip = load_audio(audio, limits, target_rate=model_input_rate())  # what the model hears, as through the API
    path = str(upload_path(audio, "audio file"))  # the transcript plays the upload back
    if mode not in MODES:
        raise InvalidInputError(f"unknown mode {mode!r}; choose one of {', '.join(MODES)}")
    system_prompt = check_text(system_prompt, "system prompt", limits, required=False) or DEFAULT_SYSTEM_PROMPT
    n_new = check_new_tokens(max_new_tokens, limits)
    session = session if isinstance(session, dict) and "turns" in session else new_session()
    if len(session["turns"]) >= MAX_TURNS:
        raise InvalidInputError(f"this conversation has reached {MAX_TURNS} turns; press “New conversation” "
                                "to start another")
    pipe = slot.get().s2s(mode)
    if session["conversation"] is None:
        session["conversation"] = pipe.conversation(system_prompt)
        session["system_prompt"] = system_prompt
    elif system_prompt != session["system_prompt"]:
        raise InvalidInputError("the system prompt is fixed when a conversation starts; press “New conversation” "
                                "to talk with the new one")
    turns = session["turns"]
    turn: dict[str, Any] = {"user_audio": path, "reply_text": "", "reply_audio": None, "sample_rate": OUTPUT_RATE}
    chunks: list[np.ndarray] = []
    window: list[str] = []
    reply_id = uuid.uuid4().hex[:12]  # the page's player starts a new reply when this changes
    t0 = time.perf_counter()
    first_text = first_audio = None
    last_refresh = last_text = -1.0
    yield _history_messages([*turns, turn]), None, status_html("listening…", "info"), session, ""
    try:
        conversation = session["conversation"]
        for piece in stream_in_thread(lambda: pipe.stream(clip, max_new_tokens=n_new, conversation=conversation)):
            now = time.perf_counter() - t0
            if isinstance(piece, str):
                if not piece:
                    continue
                first_text = now if first_text is None else first_text
                turn["reply_text"] += piece
                if now - last_text >= TEXT_REFRESH_SECONDS:  # re-rendering the transcript per piece is wasteful
                    last_text = now
                    yield (_history_messages([*turns, turn]), gr.skip(),
                           _stats(first_text, first_audio, now, chunks, turn, False), session, gr.skip())
                continue
            chunk, rate = _audio_piece(piece)
            if chunk.size == 0:
                continue
            turn["sample_rate"] = rate or turn["sample_rate"]
            first_audio = now if first_audio is None else first_audio
            chunks.append(chunk)
            if not stream_audio:  # the last LIVE_WINDOW chunks: a burst of updates the page coalesces loses none
                window = [*window[-(LIVE_WINDOW - 1):], live_chunk(reply_id, len(chunks) - 1, turn["sample_rate"],
                                                                    chunk)]
            live = gr.skip() if stream_audio else ";".join(window)
            if stream_audio:
                out = (turn["sample_rate"], _pcm16(chunk))
            elif now - last_refresh >= REFRESH_SECONDS:
                last_refresh = now
                out = (turn["sample_rate"], _pcm16(np.concatenate(chunks)))
            else:
                out = gr.skip()
            yield gr.skip(), out, _stats(first_text, first_audio, now, chunks, turn, False), session, live
    except BaseException:
        # the model's conversation may hold half a turn now: the next turn starts a fresh one
        session["conversation"] = None
        raise
    total = time.perf_counter() - t0
    turn["reply_audio"] = np.concatenate(chunks) if chunks else None
    if turn["reply_audio"] is not None:
        turn["reply_path"] = _save_reply(turn["reply_audio"], turn["sample_rate"])
    turns.append(turn)
    final_audio: Any = gr.skip() if stream_audio else (
        (turn["sample_rate"], _pcm16(turn["reply_audio"])) if turn["reply_audio"] is not None else None)
    yield (_history_messages(turns), final_audio, _stats(first_text, first_audio, total, chunks, turn, True), session,
           gr.skip())


#: chunks repeated in each live update (the page plays each sequence number once)
LIVE_WINDOW = 8


def live_chunk(reply: str, seq: int, rate: int, chunk: np.ndarray) -> str:
    """One audio chunk for the page's live player: ``reply:seq:rate:base64 of little-endian PCM16``.

    >>> live_chunk("r1", 0, 24000, np.zeros(2, np.float32))
    'r1:0:24000:AAAAAA=='
    """
    import base64

    return f"{reply}:{seq}:{rate}:{base64.b64encode(_pcm16(chunk).astype('<i2').tobytes()).decode('ascii')}"


#: the page's live player: schedules each chunk (``;``-separated, each sequence number of a reply once) on a
#: WebAudio context right after the previous one; a new reply id starts a new reply (resetting on the Send click
#: instead raced the first updates of the reply: chunks already played were counted again);
#: ``window.mmSpeechPlayer`` keeps counters the browser test reads
LIVE_PLAYER_JS = """(payload) => {
  const p = (window.mmSpeechPlayer = window.mmSpeechPlayer || {ctx: null, next: 0, seq: -1, chunks: 0, seconds: 0});
  if (!payload) return;
  for (const item of payload.split(";")) {
  const [reply, seqText, rateText, b64] = item.split(":");
  const seq = Number(seqText), rate = Number(rateText);
  if (reply !== p.reply) {
    p.reply = reply; p.seq = -1; p.next = 0; p.chunks = 0; p.seconds = 0; p.firstAt = performance.now();
  }
  if (seq <= p.seq) continue;
  p.seq = seq;
  if (!p.ctx) p.ctx = new (window.AudioContext || window.webkitAudioContext)();
  const bytes = atob(b64), n = bytes.length / 2, data = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    const v = bytes.charCodeAt(2 * i) | (bytes.charCodeAt(2 * i + 1) << 8);
    data[i] = (v >= 32768 ? v - 65536 : v) / 32768;
  }
  const buffer = p.ctx.createBuffer(1, n, rate);
  buffer.copyToChannel(data, 0);
  const source = p.ctx.createBufferSource();
  source.buffer = buffer;
  source.connect(p.ctx.destination);
  const start = Math.max(p.ctx.currentTime + 0.05, p.next);
  source.start(start);
  p.next = start + n / rate;
  p.chunks += 1;
  p.seconds += n / rate;
  p.lastAt = performance.now();
  }
}"""

#: run on the Send click (a user gesture, which browsers require before a page may play audio)
LIVE_PLAYER_START_JS = """() => {
  const p = (window.mmSpeechPlayer = window.mmSpeechPlayer || {ctx: null, next: 0, seq: -1, chunks: 0, seconds: 0});
  if (!p.ctx) p.ctx = new (window.AudioContext || window.webkitAudioContext)();
  p.ctx.resume();
}"""


def _stats(first_text: float | None, first_audio: float | None, elapsed: float, chunks: list[np.ndarray],
           turn: dict[str, Any], done: bool) -> str:
    seconds = sum(c.size for c in chunks) / turn["sample_rate"]
    parts = []
    if first_text is not None:
        parts.append(f"first text: {fmt_seconds(first_text)}")
    if first_audio is not None:
        parts.append(f"first audio: {fmt_seconds(first_audio)}")
    parts.append(f"audio: {seconds:.2f} s")
    parts.append(f"{'total' if done else 'elapsed'}: {fmt_seconds(elapsed)}")
    if done and seconds > 0:
        parts.append(f"real-time factor: {elapsed / seconds:.2f}")
    return status_html(" · ".join(parts), "ok" if done else "info")


def transcribe(slot: ModelSlot, limits: AppLimits, audio: Any) -> tuple[str, str]:
    """ASR: ``(transcript, stats html)`` for an uploaded or recorded file."""
    clip = load_audio(audio, limits, target_rate=model_input_rate())
    pipe = slot.get().asr()
    t0 = time.perf_counter()
    text = pipe(clip, max_new_tokens=limits.max_new_tokens).text
    elapsed = time.perf_counter() - t0
    return text, status_html(f"{clip.duration:.2f} s of audio transcribed in {fmt_seconds(elapsed)}", "ok")


def model_input_rate() -> int:
    """The sample rate the speech pipelines take their input at: uploads are decoded straight to it."""
    from mm.pipelines.speech import INPUT_RATE

    return INPUT_RATE


def tts_voices() -> tuple[str, ...]:
    """The voices the TTS pipeline knows (empty when the speech pipelines are not installed)."""
    try:
        from mm.pipelines.speech import TTS_VOICES
    except ImportError:
        return ()
    return tuple(TTS_VOICES)


def synthesize(slot: ModelSlot, limits: AppLimits, text: str, voice: str | None = None,
               max_new_tokens: Any = None) -> tuple[tuple[int, np.ndarray] | None, str]:
    """TTS: ``((sample_rate, samples), stats html)`` for ``text`` in ``voice`` (None: the model's default).

    ``max_new_tokens`` bounds the speech length (one step is one 80 ms audio frame).
    """
    text = check_text(text, "text", limits)
    n_new = check_new_tokens(limits.max_new_tokens if max_new_tokens is None else max_new_tokens, limits)
    if voice in (None, "", DEFAULT_VOICE):
        voice = None
    elif voice not in tts_voices():
        raise InvalidInputError(f"unknown voice {voice!r}; choose one of {', '.join(tts_voices())}")
    pipe = slot.get().tts()
    t0 = time.perf_counter()
    result = pipe(text, voice=voice, max_new_tokens=n_new) if voice else pipe(text, max_new_tokens=n_new)
    elapsed = time.perf_counter() - t0
    audio = _as_audio(result.audio)
    if audio.size == 0:
        if getattr(result, "stop_reason", None) == "max_new_tokens":
            message = (f"no speech yet: the model used all {n_new} steps before it began to speak; "
                       "raise Max new tokens")
        else:
            message = "the model produced no speech for this text; try a longer sentence"
        return None, status_html(message, "error")
    seconds = audio.size / result.sample_rate
    return (int(result.sample_rate), _pcm16(audio)), status_html(
        f"{seconds:.2f} s of audio in {fmt_seconds(elapsed)}", "ok")


def check_stream_audio(stream_audio: bool) -> bool:
    """``stream_audio`` after checking that ffmpeg, which Gradio's streamed audio output needs, is installed."""
    if stream_audio and not ffmpeg_available():
        raise MissingDependencyError(
            "streamed audio playback needs ffmpeg on PATH (Debian: apt-get install ffmpeg); without it, start the "
            "app without --stream-audio and the reply player is refreshed as audio arrives instead")
    return bool(stream_audio)


def render_speech(slot: ModelSlot, limits: AppLimits, *, stream_audio: bool = False) -> dict[str, Any]:
    """Lay out the conversation, ASR and TTS tabs inside the current Blocks context."""
    stream_audio = check_stream_audio(stream_audio)
    gr.HTML(slot.status(), elem_id="speech-model-status")
    with gr.Tab("Conversation", id="speech-chat"):
        session = gr.State(new_session(), time_to_live=3600)  # copied per browser session
        with gr.Row():
            with gr.Column(scale=1):
                audio_in = gr.Audio(sources=["upload", "microphone"], type="filepath", label="Your turn",
                                    elem_id="speech-input")
                mode = gr.Radio(list(MODES), value=MODES[0], label="Mode", info=MODE_HELP, elem_id="speech-mode")
                system = gr.Textbox(DEFAULT_SYSTEM_PROMPT, label="System prompt", lines=2,
                                    max_length=limits.max_text_chars, elem_id="speech-system")
                max_new = gr.Slider(1, limits.max_new_tokens, value=min(256, limits.max_new_tokens), step=1,
                                    label="Max new tokens", elem_id="speech-max-new")
                with gr.Row():
                    send = gr.Button("Send", variant="primary", elem_id="speech-send")
                    clear = gr.Button("New conversation", elem_id="speech-clear")
            with gr.Column(scale=1):
                chat = gr.Chatbot(label="Transcript", height=360, elem_id="speech-chat-log",
                                  feedback_options=None)
                reply = gr.Audio(label="Reply", type="numpy", interactive=False, streaming=stream_audio,
                                 autoplay=stream_audio, elem_id="speech-reply")
                stats = gr.HTML("", elem_id="speech-stats")
                # each new audio chunk, played by the page as it arrives (without ffmpeg for streamed output)
                live = gr.Textbox("", visible="hidden", elem_id="speech-live")

    @user_errors
    def talk(audio: Any, m: str, sp: str, n: Any, state: dict) -> Iterator[tuple[Any, ...]]:
        yield from conversation_stream(slot, limits, audio, m, sp, n, state, stream_audio=stream_audio)

    send.click(talk, [audio_in, mode, system, max_new, session], [chat, reply, stats, session, live],
               api_name="speech_to_speech", **slot.event_options)
    if not stream_audio:
        send.click(None, None, None, js=LIVE_PLAYER_START_JS, queue=False, api_visibility="private")
        live.change(None, [live], None, js=LIVE_PLAYER_JS, queue=False, api_visibility="private")
    clear.click(lambda: ([], None, "", new_session(), None), None, [chat, reply, stats, session, audio_in],
                queue=False,
                api_visibility="private")

    with gr.Tab("Speech recognition", id="speech-asr"), gr.Row():
        with gr.Column():
            asr_in = gr.Audio(sources=["upload", "microphone"], type="filepath", label="Audio",
                              elem_id="asr-input")
            asr_go = gr.Button("Transcribe", variant="primary", elem_id="asr-run")
        with gr.Column():
            asr_text = gr.Textbox(label="Transcript", lines=6, interactive=False, elem_id="asr-text")
            asr_stats = gr.HTML("", elem_id="asr-stats")
    asr_go.click(user_errors(lambda a: transcribe(slot, limits, a)), asr_in, [asr_text, asr_stats],
                 api_name="asr", **slot.event_options)

    with gr.Tab("Text to speech", id="speech-tts"), gr.Row():
        with gr.Column():
            tts_text = gr.Textbox(label="Text", lines=4, max_length=limits.max_text_chars,
                                  placeholder="Type what the model should say", elem_id="tts-text")
            voices = tts_voices()
            tts_voice = gr.Dropdown([DEFAULT_VOICE, *voices], value=DEFAULT_VOICE, label="Voice",
                                    visible=bool(voices), elem_id="tts-voice")
            tts_max_new = gr.Slider(1, limits.max_new_tokens, value=limits.max_new_tokens, step=1,
                                    label="Max new tokens (one per 80 ms of speech)", elem_id="tts-max-new")
            tts_go = gr.Button("Speak", variant="primary", elem_id="tts-run")
        with gr.Column():
            tts_audio = gr.Audio(label="Speech", type="numpy", interactive=False, elem_id="tts-audio")
            tts_stats = gr.HTML("", elem_id="tts-stats")
    tts_go.click(user_errors(lambda t, v, n: synthesize(slot, limits, t, v, n)), [tts_text, tts_voice, tts_max_new],
                 [tts_audio, tts_stats], api_name="tts", **slot.event_options)
    return {"audio": audio_in, "mode": mode, "send": send, "chat": chat, "reply": reply, "stats": stats,
            "asr_input": asr_in, "asr_text": asr_text, "tts_text": tts_text, "tts_audio": tts_audio}


def build_speech_app(model: Any = None, *, limits: AppLimits | None = None, concurrency_limit: int = 1,
                     device: str = "auto", dtype: str = "auto", stream_audio: bool = False) -> gr.Blocks:
    """The speech app. ``model`` is an LFM2-Audio checkpoint directory, a :class:`SpeechModels`, or None.

    ``stream_audio=True`` plays the reply while it is generated through Gradio's streamed audio
    output, which needs ffmpeg; by default the reply player is refreshed as audio arrives.

    >>> build_speech_app(None).title
    'mm · speech'
    """
    limits = limits or AppLimits()
    slot = model if isinstance(model, ModelSlot) else speech_slot(model, concurrency_limit=concurrency_limit,
                                                                   device=device, dtype=dtype)
    with gr.Blocks(title="mm · speech", analytics_enabled=False) as app:
        gr.Markdown("## Speech (LFM2-Audio)\nTalk to the model (record or upload), transcribe audio, "
                    "or turn text into speech.")
        render_speech(slot, limits, stream_audio=stream_audio)
    return prepare(app, limits)
