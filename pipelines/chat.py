"""``mm.pipeline("chat")``: messages in, text out, with streaming.

>>> import tempfile, mm, mm.testing
>>> chat = mm.pipeline("chat", model=mm.testing.make_tiny_lfm2(tempfile.mkdtemp()), dtype="float32")
>>> result = chat("Hello", max_new_tokens=5)
>>> isinstance(result.text, str) and result.num_tokens <= 5
True
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from mm.backbone import Backbone, GenerationSettings, check_engine
from mm.base import Pipeline
from mm.errors import InvalidInputError
from mm.validation import check_optional_text, check_text

ROLES = ("system", "user", "assistant", "tool")


@dataclass
class ChatResult:
    """One generated reply."""

    text: str
    token_ids: list[int]
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def num_tokens(self) -> int:
        return len(self.token_ids)

    def __str__(self) -> str:
        return self.text


class ChatPipeline(Pipeline):
    """Text generation with an LFM2 chat model.

    An item is a string (one user message) or a list of ``{"role", "content"}`` messages;
    a list of such items is a batch (generated together, left-padded).
    """

    task = "chat"
    init_options = {"quantize": None, "threads": None, "batch_size": 8, "engine": "auto"}
    call_options = {
        "max_new_tokens": 256, "do_sample": False, "temperature": None, "top_k": None, "top_p": None,
        "repetition_penalty": None, "stop": (), "seed": None, "system_prompt": None,
    }

    def setup(self, quantize=None, threads=None, batch_size=8, engine="auto") -> None:
        self.batch_size = int(batch_size)
        self.engine = check_engine(engine)  # "auto" (mm's fast decode loop where it applies), "fast", "transformers"
        self.backbone = Backbone.load(self.model_id, device=self.device, dtype=self.dtype, quantize=quantize,
                                      threads=threads)

    def is_batch(self, inputs: Any) -> bool:
        if isinstance(inputs, str):
            return False
        if isinstance(inputs, list | tuple) and inputs and all(isinstance(m, dict) for m in inputs):
            return False  # one conversation
        return isinstance(inputs, list | tuple)

    def preprocess(self, item: Any, system_prompt: str | None = None, **_: Any) -> list[dict[str, Any]]:
        if isinstance(item, str):
            messages = [{"role": "user", "content": check_text(item, "the message")}]
        elif isinstance(item, list | tuple) and item:
            messages = [dict(m) for m in item]
            for i, m in enumerate(messages):
                if m.get("role") not in ROLES or not isinstance(m.get("content"), str):
                    raise InvalidInputError(
                        f"message {i} must be {{'role': one of {ROLES}, 'content': str}}, got {m!r}"
                    )
                check_text(m["content"], f"message {i}'s content", allow_empty=True)
        else:
            raise InvalidInputError(f"chat takes a string or a list of messages, got {type(item).__name__}")
        if check_optional_text(system_prompt, "system_prompt"):
            messages = [m for m in messages if m["role"] != "system"]
            messages.insert(0, {"role": "system", "content": system_prompt})
        return messages

    @staticmethod
    def _settings(options: dict[str, Any]) -> GenerationSettings:
        names = GenerationSettings.__dataclass_fields__
        return GenerationSettings(**{k: v for k, v in options.items() if k in names}).validate()

    def _forward(self, batch: list[list[dict]], **options: Any) -> list[ChatResult]:
        settings = self._settings(options)
        t0 = time.perf_counter()
        inputs = self.backbone.encode_chat(batch)
        rows = self.backbone.generate(inputs, settings, engine=self.engine)
        elapsed = time.perf_counter() - t0
        return [ChatResult(self.backbone.decode(ids, settings.stop), ids, {"generate_s": elapsed}) for ids in rows]

    def _stream(self, item: Any, **options: Any) -> Iterator[str]:
        settings = self._settings(options)
        inputs = self.backbone.encode_chat([self.preprocess(item, **options)])
        yield from self.backbone.stream(inputs, settings, engine=self.engine)
