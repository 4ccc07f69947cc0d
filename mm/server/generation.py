"""Generate for a batch of chat requests at once, each row with its own limit, stop strings and cancel flag.

One left-padded batch goes through the backbone's decode loop (mm's fast loop on CPU, else
transformers' ``generate``); every step hands each row its new token. A row ends at EOS, at one of
its stop strings, at its own ``max_tokens`` or when its client went away; the batch ends when every
row has. Text is streamed per row, holding back only what could still turn into a stop string.

>>> import tempfile, mm, mm.testing
>>> chat = mm.pipeline("chat", model=mm.testing.make_tiny_lfm2(tempfile.mkdtemp()), dtype="float32")
>>> bb = chat.backbone
>>> rows = [Row(max_tokens=3), Row(max_tokens=5)]
>>> generate_rows(bb, bb.encode_chat([[{"role": "user", "content": "Hi"}]] * 2), rows, Sampling())
>>> [len(r.token_ids) <= r.max_tokens for r in rows], rows[0].token_ids == rows[1].token_ids[:len(rows[0].token_ids)]
([True, True], True)
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from mm import runtime
from mm.backbone import GenerationSettings, cut_at_stop


@dataclass(frozen=True)
class Sampling:
    """The settings that must be equal for requests to share a batch (greedy when ``temperature`` is None)."""

    temperature: float | None = None
    top_p: float | None = None
    seed: int | None = None

    @property
    def do_sample(self) -> bool:
        return self.temperature is not None


@dataclass
class Row:
    """One request's generation state; ``emit`` receives text pieces from the generating thread."""

    max_tokens: int
    stop: Sequence[str] = ()
    emit: Callable[[str], None] | None = None
    cancel: threading.Event = field(default_factory=threading.Event)
    token_ids: list[int] = field(default_factory=list)
    text: str = ""
    sent: int = 0
    finish_reason: str | None = None  # "stop", "length" or "cancelled"
    # incremental detokenization: decode a few tokens of context plus the new ones, never the whole reply
    _decoded: str = field(default="", init=False, repr=False)
    _prefix: int = field(default=0, init=False, repr=False)
    _read: int = field(default=0, init=False, repr=False)

    @property
    def finished(self) -> bool:
        return self.finish_reason is not None

    def _finish(self, reason: str) -> None:
        self.finish_reason = reason
        self._send(len(self.text))

    def _send(self, upto: int) -> None:
        if upto > self.sent:
            piece, self.sent = self.text[self.sent:upto], upto
            if self.emit is not None:
                self.emit(piece)

    def step(self, token: int, eos: set[int], tokenizer: Any) -> None:
        """Take one generated token."""
        if self.finished:
            return
        if self.cancel.is_set():
            self.finish_reason = "cancelled"
            return
        if token in eos:
            self._flush(tokenizer)
            self._finish("stop")
            return
        self.token_ids.append(token)
        self._detokenize(tokenizer)
        at_limit = len(self.token_ids) >= self.max_tokens
        if at_limit:
            self._flush(tokenizer)
        cut = cut_at_stop(self._decoded, self.stop)
        self.text = cut
        if len(cut) < len(self._decoded):
            self._finish("stop")
        elif at_limit:
            self._finish("length")
        else:
            hold = max((len(s) for s in self.stop), default=1) - 1
            self._send(len(self.text) - hold)

    def _detokenize(self, tokenizer: Any) -> None:
        ids = self.token_ids
        before = tokenizer.decode(ids[self._prefix:self._read], skip_special_tokens=True)
        now = tokenizer.decode(ids[self._prefix:], skip_special_tokens=True)
        if len(now) > len(before) and not now.endswith("\ufffd"):  # an incomplete UTF-8 sequence waits
            self._decoded += now[len(before):]
            self._prefix, self._read = self._read, len(ids)

    def _flush(self, tokenizer: Any) -> None:
        """Decode what is left at the end (even an incomplete UTF-8 sequence, as a full decode would)."""
        if self._read < len(self.token_ids):
            before = tokenizer.decode(self.token_ids[self._prefix:self._read], skip_special_tokens=True)
            now = tokenizer.decode(self.token_ids[self._prefix:], skip_special_tokens=True)
            self._decoded += now[len(before):]
            self._prefix = self._read = len(self.token_ids)


def generate_rows(backbone: Any, inputs: dict[str, Any], rows: list[Row], sampling: Sampling) -> None:
    """Generate for every row of the left-padded ``inputs``; fills each :class:`Row` and ends it."""
    import torch

    settings = GenerationSettings(max_new_tokens=max(r.max_tokens for r in rows), do_sample=sampling.do_sample,
                                  temperature=sampling.temperature, top_p=sampling.top_p,
                                  seed=sampling.seed).validate()
    eos = set(_as_list(backbone.model.generation_config.eos_token_id)) | {backbone.tokenizer.pad_token_id}

    def on_tokens(next_tokens: Any) -> None:
        for row, token in zip(rows, next_tokens.tolist(), strict=True):
            row.step(int(token), eos, backbone.tokenizer)

    def done(*_: Any) -> Any:
        for row in rows:
            if not row.finished and row.cancel.is_set():
                row.finish_reason = "cancelled"
        return torch.tensor([row.finished for row in rows], dtype=torch.bool)

    with backbone._lock, torch.inference_mode():
        engine = backbone.resolve_engine(settings)
        if engine != "transformers":
            _fast(backbone, inputs, settings, on_tokens, done, engine)  # a seed seeds the call's own torch.Generator
        else:
            with torch.random.fork_rng(devices=[]):  # transformers samples from the global RNG: restored after
                if sampling.seed is not None:
                    torch.manual_seed(sampling.seed)
                _transformers(backbone, inputs, settings, on_tokens, done)
    for row in rows:  # the batch's step budget ran out (max_new_tokens) without the row noticing
        if not row.finished:
            row._flush(backbone.tokenizer)
            row.text = cut_at_stop(row._decoded, row.stop)
            row._finish("length")


def _fast(backbone: Any, inputs: dict, settings: GenerationSettings, on_tokens: Any, done: Any,
          engine: str) -> None:
    kwargs = settings.generate_kwargs()
    backbone.fast(engine).generate(
        inputs["input_ids"], inputs.get("attention_mask"), max_new_tokens=settings.max_new_tokens,
        do_sample=settings.do_sample, temperature=kwargs.get("temperature", 1.0), top_k=kwargs.get("top_k", 0),
        top_p=kwargs.get("top_p", 1.0), repetition_penalty=backbone.model.generation_config.repetition_penalty,
        eos_token_ids=_as_list(backbone.model.generation_config.eos_token_id),
        pad_token_id=backbone.tokenizer.pad_token_id, stop_check=done, on_tokens=on_tokens,
        inputs_embeds=backbone._fast_inputs_embeds(inputs), generator=runtime.seeded_generator(settings.seed))


def _transformers(backbone: Any, inputs: dict, settings: GenerationSettings, on_tokens: Any, done: Any) -> None:
    from transformers import StoppingCriteria, StoppingCriteriaList

    class _RowsDone(StoppingCriteria):
        def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
            return done().to(input_ids.device)

    class _Steps:  # a streamer: generate() puts the prompt first, then each step's [B] tokens
        prompt_seen = False

        def put(self, value: Any) -> None:
            if not self.prompt_seen:
                self.prompt_seen = True
                return
            on_tokens(value.reshape(-1).cpu())

        def end(self) -> None:
            pass

    kwargs = backbone._generate_kwargs(inputs, settings)
    backbone.model.generate(**kwargs, streamer=_Steps(), stopping_criteria=StoppingCriteriaList([_RowsDone()]))


def _as_list(value: Any) -> list[int]:
    if value is None:
        return []
    return list(value) if isinstance(value, list | tuple) else [value]
