"""Batched sequential decoding of LFM2-Audio: several prompts through the backbone together.

The prompts' embeddings are left-padded into one ``[B, L, H]`` batch with an attention mask; mm's
fast decode loop prefills them at once and then steps every row together (one backbone forward per
step for the whole batch). Each row follows the official sequential schedule on its own: text until
``<|audio_start|>``, then audio frames until end-of-audio, then text until ``<|im_end|>``. The depth
transformer samples each audio row's frame on its own. A row that has finished is fed a zero
embedding (masked out of nothing else) until the last row finishes.

Each row gets its own generator seeded with ``config.seed``, so a row samples what the same prompt
alone would sample (up to float rounding of the batched matrix products).

>>> import tempfile, numpy as np, mm.testing
>>> from mm.models.lfm2_audio import LFM2Audio
>>> from mm.encoders.audio_generate import GenerationConfig, generate
>>> bundle = LFM2Audio.load(mm.testing.make_tiny_lfm2_audio(tempfile.mkdtemp()), dtype="float32")
>>> def prompt(text):
...     h = bundle.new_history(); h.add_turn("system", text="Perform TTS."); h.add_turn("user", text=text)
...     h.new_turn("assistant"); return h
>>> config = GenerationConfig(mode="sequential", max_new_tokens=6)
>>> rows = generate_batch(bundle.model, [prompt("Hi"), prompt("A longer sentence to say.")], config)
>>> [r.steps == list(generate(bundle.model, p, config)) for r, p in zip(rows, [prompt("Hi"),
...  prompt("A longer sentence to say.")])]
[True, True]
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from mm.encoders.audio_generate import AUDIO_START, IM_END, GenerationConfig, Step
from mm.encoders.audio_out import END_OF_AUDIO
from mm.errors import InputTooLargeError, InvalidInputError


@dataclass
class BatchRow:
    """What one prompt of the batch generated: its steps and why it stopped."""

    steps: list[Step] = field(default_factory=list)
    stop_reason: str = "max_new_tokens"


def generate_batch(model: Any, histories: Sequence[Any], config: GenerationConfig, *,
                   stop_at_audio_start: bool = False, stop_after_audio: bool = False) -> list[BatchRow]:
    """Decode ``histories`` together in ``sequential`` mode; return one :class:`BatchRow` per history.

    ``stop_at_audio_start`` ends a row at ``<|audio_start|>`` (ASR: the transcript is done);
    ``stop_after_audio`` ends it at its first end-of-audio frame (TTS). Stop reasons: ``im_end``,
    ``audio_start``, ``end_of_audio`` or ``max_new_tokens``.
    """
    config.validate()
    if config.mode != "sequential":
        raise InvalidInputError("batched decoding runs the sequential mode; interleaved replies stream one by one")
    if not histories:
        return []
    limit = int(getattr(model.lfm.config, "max_position_embeddings", 0) or 0)
    longest = max(len(h) for h in histories)
    if limit and longest + config.max_new_tokens > limit:
        raise InputTooLargeError(f"a prompt ({longest} positions) + max_new_tokens ({config.max_new_tokens}) "
                                 f"exceeds the model's context of {limit} positions")
    with torch.inference_mode():
        return _decode(model, histories, config, stop_at_audio_start, stop_after_audio)


def _decode(model: Any, histories: Sequence[Any], config: GenerationConfig, stop_at_audio_start: bool,
            stop_after_audio: bool) -> list[BatchRow]:
    batch = len(histories)
    embeds = [h.embeddings(model) for h in histories]
    length = max(e.shape[0] for e in embeds)
    hidden_size = embeds[0].shape[1]
    padded = embeds[0].new_zeros(batch, length, hidden_size)
    mask = torch.zeros(batch, length, dtype=torch.long)
    for i, e in enumerate(embeds):  # left padding, as the fast loop's prefill expects
        padded[i, length - e.shape[0]:] = e
        mask[i, length - e.shape[0]:] = 1
    fast = model.fast_backbone()
    state = fast.prefill(inputs_embeds=padded, attention_mask=mask, max_new_tokens=config.max_new_tokens)
    hidden = state.hidden
    generators = [None if config.seed is None else torch.Generator().manual_seed(int(config.seed))
                  for _ in range(batch)]
    rows = [BatchRow() for _ in range(batch)]
    audio = [False] * batch
    done = [False] * batch
    blank = padded.new_zeros(1, hidden_size)
    for n in range(config.max_new_tokens):
        nxt = []
        for i in range(batch):
            if done[i]:
                nxt.append(blank)
                continue
            if not audio[i]:
                token = config.text.pick(model.text_logits(hidden[i]), generators[i])
                rows[i].steps.append(Step("text", token=token))
                nxt.append(model.embed_text(torch.tensor([token])))
                if token == AUDIO_START:
                    if stop_at_audio_start:
                        done[i], rows[i].stop_reason = True, "audio_start"
                    audio[i] = True
                elif token == IM_END:
                    done[i], rows[i].stop_reason = True, "im_end"
            else:
                codes = model.audio_head.sample_frame(hidden[i], config.audio, generators[i])
                rows[i].steps.append(Step("audio", codes=tuple(codes)))
                nxt.append(model.embed_frames(torch.tensor(codes)[:, None]).to(blank.dtype))
                if codes[0] == END_OF_AUDIO:
                    audio[i] = False
                    if stop_after_audio:
                        done[i], rows[i].stop_reason = True, "end_of_audio"
        if all(done) or n == config.max_new_tokens - 1:
            break
        hidden = fast.step(state, inputs_embeds=torch.cat(nxt).to(padded.dtype)[:, None])
    return rows
