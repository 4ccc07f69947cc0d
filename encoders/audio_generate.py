"""LFM2-Audio generation: the chat history (the official ``ChatState``), prefill, and the
sequential and interleaved decoding loops, step for step as the official code runs them.

Each loop iteration is one backbone forward and one *step*; ``max_new_tokens`` counts steps.
A step yields a :class:`Step`: a text token or an audio frame of 8 codes (an end-of-audio frame is
``[2048] * 8``).

* ``sequential``: text first; token 128 ``<|audio_start|>`` switches to audio, an end-of-audio
  frame switches back to text, ``<|im_end|>`` (yielded) stops.
* ``interleaved``: blocks of ``interleaved_n_text`` text tokens and ``interleaved_n_audio`` frames;
  ``<|text_end|>`` ends the text (audio then runs until end-of-audio), ``<|im_end|>`` stops without
  being yielded.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch
from mm.encoders.audio_in import encoder_frames, log_mel
from mm.encoders.audio_out import END_OF_AUDIO, SamplingSettings

from mm.errors import InputTooLargeError, InvalidInputError

log = logging.getLogger(__name__)

TEXT, AUDIO_IN, AUDIO_OUT = 1, 2, 3
AUDIO_START = 128  # <|audio_start|>
TEXT_END = 130  # <|text_end|>
IM_END = 7  # <|im_end|>
MODES = ("interleaved", "sequential")
ENGINES = ("auto", "native", "fast", "transformers")
#: the FastLfm2 kernels behind each engine that runs mm's decode loop
_KERNELS = {"auto": "auto", "native": "native", "fast": "torch"}
Mode = Literal["interleaved", "sequential"]


@dataclass(frozen=True)
class Step:
    """One generated item: ``kind == "text"`` with ``token``, or ``kind == "audio"`` with 8 ``codes``."""

    kind: Literal["text", "audio"]
    token: int | None = None
    codes: tuple[int, ...] | None = None

    @property
    def end_of_audio(self) -> bool:
        return self.kind == "audio" and self.codes is not None and self.codes[0] == END_OF_AUDIO


@dataclass
class ChatHistory:
    """The prompt as the official ``ChatState`` builds it: text ids, audio-in mel segments,
    audio-out frames and one modality flag per backbone position. Build it with
    ``LFM2Audio.new_history()``; a turn is ``new_turn(role)``, ``add_text`` / ``add_audio``, ``end_turn()``.
    """

    tokenizer: Any
    feature_extractor: Any
    text_ids: list[int] = field(default_factory=list)
    modality: list[int] = field(default_factory=list)
    mels: list[torch.Tensor] = field(default_factory=list)
    audio_out: list[tuple[int, ...]] = field(default_factory=list)
    _encoded: dict[int, torch.Tensor] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        if not self.text_ids:
            self._add_ids([self.tokenizer.convert_tokens_to_ids(self.tokenizer.bos_token or "<|startoftext|>")])

    def _add_ids(self, ids: Sequence[int]) -> None:
        self.text_ids.extend(int(i) for i in ids)
        self.modality.extend([TEXT] * len(ids))

    def _encode(self, text: str) -> list[int]:
        return list(self.tokenizer.encode(text, add_special_tokens=False))

    def new_turn(self, role: str) -> None:
        """Start a turn: ``<|im_start|>{role}\\n``."""
        self._add_ids(self._encode(f"<|im_start|>{role}\n"))

    def end_turn(self) -> None:
        """End a turn: ``<|im_end|>\\n``."""
        self._add_ids(self._encode("<|im_end|>\n"))

    def add_text(self, text: str) -> None:
        self._add_ids(self._encode(text))

    def add_audio(self, samples: np.ndarray) -> None:
        """Add 16 kHz mono audio (its log-mel frames become ``ceil(T/8)`` encoder positions)."""
        mel = log_mel(self.feature_extractor, samples)
        self.mels.append(mel)
        self.modality.extend([AUDIO_IN] * encoder_frames(mel.shape[0]))

    def append(self, steps: Sequence[Step]) -> None:
        """Append generated steps (text tokens and frames, end-of-audio frames included) to the history."""
        for step in steps:
            if step.kind == "text":
                self._add_ids([int(step.token)])
            else:
                self.audio_out.append(tuple(int(c) for c in step.codes))
                self.modality.append(AUDIO_OUT)

    def add_turn(self, role: str, *, text: str | None = None, audio: np.ndarray | None = None) -> None:
        """A whole turn: new_turn, optional text, optional audio, end_turn."""
        self.new_turn(role)
        if text:
            self.add_text(text)
        if audio is not None:
            self.add_audio(audio)
        self.end_turn()

    def __len__(self) -> int:
        return len(self.modality)

    def embeddings(self, model: Any) -> torch.Tensor:
        """The backbone input ``[L, hidden]`` of the whole history (the official ``_prefill``)."""
        flags = torch.tensor(self.modality)
        out = torch.empty(len(self.modality), model.hidden_size, dtype=model.dtype)
        out[flags == TEXT] = model.embed_text(torch.tensor(self.text_ids, dtype=torch.long))
        if self.mels:
            parts = []
            for i, mel in enumerate(self.mels):
                if i not in self._encoded:  # encode each audio segment once, even across turns
                    self._encoded[i] = model.encode_audio(mel)
                parts.append(self._encoded[i])
            out[flags == AUDIO_IN] = torch.cat(parts).to(out.dtype)
        if self.audio_out:
            codes = torch.tensor(self.audio_out, dtype=torch.long).T
            out[flags == AUDIO_OUT] = model.embed_frames(codes).to(out.dtype)
        return out


@dataclass
class GenerationConfig:
    """Settings of one generation: mode, step budget, text and audio sampling, seed."""

    mode: Mode = "interleaved"
    max_new_tokens: int = 512
    text: SamplingSettings = field(default_factory=SamplingSettings)
    audio: SamplingSettings = field(default_factory=SamplingSettings)
    seed: int | None = None

    def validate(self) -> GenerationConfig:
        if self.mode not in MODES:
            raise InvalidInputError(f"mode must be one of {MODES}, got {self.mode!r}")
        if isinstance(self.max_new_tokens, bool) or not isinstance(self.max_new_tokens, int) \
                or self.max_new_tokens <= 0:
            raise InvalidInputError(f"max_new_tokens must be a positive integer, got {self.max_new_tokens!r}")
        return self


class StepTimer:
    """Accumulates seconds per phase (``backbone``, ``depth``, ...) when profiling is on."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self.counts: dict[str, int] = {}

    def add(self, name: str, seconds: float) -> None:
        self.seconds[name] = self.seconds.get(name, 0.0) + seconds
        self.counts[name] = self.counts.get(name, 0) + 1


def generate(model: Any, history: ChatHistory, config: GenerationConfig, *,
             hidden_states: list[torch.Tensor] | None = None, timer: StepTimer | None = None,
             info: dict[str, Any] | None = None, engine: str = "auto") -> Iterator[Step]:
    """Run the official decoding loop for ``config.mode`` on ``history``; yield each :class:`Step`.

    ``engine``: ``"fast"`` runs the backbone steps through :mod:`mm.fast_decode` on torch's ops (preallocated
    caches, fused weights; same hidden states up to float rounding), ``"native"`` the same loop on mm's native
    kernels (:mod:`mm.kernels`, every layer of a step in one C call), both with the depth transformer on
    :class:`~mm.encoders.audio_out_fast.FastDepthLoop`; ``"transformers"`` runs the backbone through
    ``Lfm2Model``'s forward with its cache and the depth transformer through its generic modules;
    ``"auto"`` is ``"native"`` on CPU where the kernels build, else ``"fast"``.
    ``hidden_states`` (if given) receives the backbone's last-position hidden state of every forward call;
    ``info`` (if given) gets ``stop_reason``: ``"im_end"`` or ``"max_new_tokens"``.
    """
    info = {} if info is None else info
    import time

    config.validate()
    if engine not in ENGINES:
        raise InvalidInputError(f"engine must be one of {ENGINES}, got {engine!r}")
    use_loop = engine in ("fast", "native") or (engine == "auto" and model.on_cpu)
    fast = model.fast_backbone(_KERNELS[engine]) if use_loop else None
    head = model.audio_head
    if fast is not None:  # the depth transformer on its lean loop too (the generic modules otherwise)
        from mm.encoders.audio_out_fast import fast_depth_loop

        head = fast_depth_loop(model.audio_head, native=fast.native is not None)
    limit = int(getattr(model.lfm.config, "max_position_embeddings", 0) or 0)
    if limit and len(history) + config.max_new_tokens > limit:
        raise InputTooLargeError(
            f"prompt ({len(history)} positions) + max_new_tokens ({config.max_new_tokens}) exceeds the model's "
            f"context of {limit} positions; shorten the conversation or lower max_new_tokens"
        )
    generator = None
    if config.seed is not None:
        generator = torch.Generator().manual_seed(int(config.seed))
    interleaved = config.mode == "interleaved"
    n_text, n_audio = model.config.interleaved_n_text, model.config.interleaved_n_audio
    clock = time.perf_counter

    with torch.inference_mode():
        t0 = clock()
        emb = history.embeddings(model)[None]
    if timer:
        timer.add("encoder+prefill_embeddings", clock() - t0)
    cache = state = None
    modality = TEXT
    left = n_text
    text_done = False
    for _ in range(config.max_new_tokens):
        left -= 1
        t0 = clock()
        if fast is not None:
            if state is None:
                state = fast.prefill(inputs_embeds=emb, max_new_tokens=config.max_new_tokens)
                hidden = state.hidden[0]
            else:
                hidden = fast.step(state, inputs_embeds=emb)[0]
        else:
            with torch.inference_mode():
                out = model.lfm(inputs_embeds=emb, past_key_values=cache, use_cache=True)
            cache = out.past_key_values
            hidden = out.last_hidden_state[0, -1]
        if timer:
            timer.add("backbone_prefill" if emb.shape[1] > 1 else "backbone_step", clock() - t0)
        if hidden_states is not None:
            hidden_states.append(hidden.float().clone())
        if modality == TEXT:
            t0 = clock()
            with torch.inference_mode():
                token = config.text.pick(model.text_logits(hidden), generator)
                emb = model.embed_text(torch.tensor([[token]]))
            if timer:
                timer.add("text_head", clock() - t0)
            if interleaved and token == IM_END:
                info["stop_reason"] = "im_end"
                return
            yield Step("text", token=token)
            if not interleaved:
                if token == AUDIO_START:
                    modality = AUDIO_OUT
                if token == IM_END:
                    info["stop_reason"] = "im_end"
                    return
            else:
                if token == TEXT_END:
                    text_done = True
                if left == 0 or text_done:
                    modality, left = AUDIO_OUT, n_audio
        else:
            t0 = clock()
            with torch.inference_mode():
                codes = head.sample_frame(hidden, config.audio, generator)
                emb = model.embed_frames(torch.tensor(codes)[:, None])[None]
            if timer:
                timer.add("depth", clock() - t0)
            if interleaved and left == 0 and not text_done:
                modality, left = TEXT, n_text
            if codes[0] == END_OF_AUDIO:
                modality = TEXT
            yield Step("audio", codes=tuple(codes))
    info["stop_reason"] = "max_new_tokens"
