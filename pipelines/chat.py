"""``mm.pipeline("chat")``: messages in, text out, with streaming.

>>> import tempfile, mm, mm.testing
>>> chat = mm.pipeline("chat", model=mm.testing.make_tiny_lfm2(tempfile.mkdtemp()), dtype="float32")
>>> result = chat("Hello", max_new_tokens=5)
>>> isinstance(result.text, str), len(result.token_ids) <= 5, result.stop_reason in ("eos", "max_new_tokens")
(True, True, True)
>>> sorted(result.usage)
['generated_tokens', 'prompt_tokens']
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from mm import options as opts
from mm.backbone import REPETITION_PENALTY, Backbone, GenerationSettings, check_engine
from mm.base import Pipeline
from mm.errors import InvalidInputError
from mm.results import GenerationResult

ROLES = ("system", "user", "assistant", "tool")

@dataclass
class ChatResult(GenerationResult):
    """One generated reply (``usage``: ``prompt_tokens``, ``generated_tokens``)."""


class ChatPipeline(Pipeline):
    """Text generation with an LFM2 chat model.

    An item is a string (one user message) or a list of ``{"role", "content"}`` messages;
    a list of such items is a batch (generated together, left-padded).
    """

    task = "chat"
    init_options = {"quantize": None, "threads": None, "batch_size": 8, "engine": "auto"}
    call_options = opts.options(opts.GENERATION_OPTIONS, (REPETITION_PENALTY, opts.SYSTEM_PROMPT))

    def setup(self, quantize=None, threads=None, batch_size=8, engine="auto") -> None:
        self.batch_size = opts.positive_int(batch_size, "batch_size")
        self.engine = check_engine(engine)  # "auto" (mm's fast decode loop where it applies), "fast", "transformers"
        self.backbone = Backbone.load(self.model_id, device=self.device, dtype=self.dtype, quantize=quantize)

    def check_call(self, options: dict[str, Any]) -> None:
        opts.check_sampling(options)

    def is_batch(self, inputs: Any) -> bool:
        if isinstance(inputs, str):
            return False
        if isinstance(inputs, list | tuple) and inputs and all(isinstance(m, dict) for m in inputs):
            return False  # one conversation
        return isinstance(inputs, list | tuple)

    def preprocess(self, item: Any, system_prompt: str | None = None) -> list[dict[str, Any]]:
        if isinstance(item, str):
            if not item.strip():
                raise InvalidInputError("the message is empty; pass some text")
            messages = [{"role": "user", "content": item}]
        elif isinstance(item, list | tuple) and item:
            messages = [dict(m) for m in item]
            for i, m in enumerate(messages):
                if m.get("role") not in ROLES or not isinstance(m.get("content"), str):
                    raise InvalidInputError(
                        f"message {i} must be {{'role': one of {ROLES}, 'content': str}}, got {m!r}"
                    )
        else:
            raise InvalidInputError(f"chat takes a string or a list of messages, got {type(item).__name__}")
        if system_prompt:
            messages = [m for m in messages if m["role"] != "system"]
            messages.insert(0, {"role": "system", "content": system_prompt})
        return messages

    def _forward(self, batch: list[list[dict]], **options: Any) -> list[ChatResult]:
        settings = GenerationSettings.from_options(options)
        t0 = time.perf_counter()
        inputs = self.backbone.encode_chat(batch)
        t1 = time.perf_counter()
        rows = self.backbone.generate_rows(inputs, settings, engine=self.engine)
        t2 = time.perf_counter()
        prompt_tokens = inputs["attention_mask"].sum(1).tolist()
        results = []
        for row, n_prompt in zip(rows, prompt_tokens, strict=True):
            text, reason = self.backbone.finish(row, settings)
            usage = {"prompt_tokens": n_prompt, "generated_tokens": len(row.token_ids)}
            results.append(ChatResult(text, row.token_ids, reason, usage,
                                      {"tokenize_s": t1 - t0, "generate_s": t2 - t1}))
        return results

    def _stream(self, item: Any, **options: Any) -> Iterator[str]:
        settings = GenerationSettings.from_options(self.stage_options(options, "forward"))
        inputs = self.backbone.encode_chat([self.preprocess(item, **self.stage_options(options, "preprocess"))])
        yield from self.backbone.stream(inputs, settings, engine=self.engine)
