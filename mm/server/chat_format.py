"""OpenAI's chat completion bodies: the full response, and the Server-Sent-Event chunks of a stream.

>>> c = Completion("chatcmpl-1", "LFM2-350M", created=0)
>>> c.chunk({"role": "assistant", "content": ""})
'data: {"id":"chatcmpl-1","object":"chat.completion.chunk","created":0,"model":"LFM2-350M","choices":[{"index":0,"delta":{"role":"assistant","content":""},"logprobs":null,"finish_reason":null}]}\\n\\n'
>>> c.response("Hi!", "stop", usage(5, 2))["choices"][0]["message"]
{'role': 'assistant', 'content': 'Hi!'}
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

DONE = "data: [DONE]\n\n"


def usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    """OpenAI's usage block."""
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens}


def new_id() -> str:
    return f"chatcmpl-{uuid.uuid4().hex}"


@dataclass
class Completion:
    """The identity shared by a response or by every chunk of one stream."""

    id: str
    model: str
    created: int = field(default_factory=lambda: int(time.time()))
    include_usage: bool = False

    def _head(self, obj: str) -> dict[str, Any]:
        return {"id": self.id, "object": obj, "created": self.created, "model": self.model}

    def response(self, text: str, finish_reason: str, usage_block: dict[str, int]) -> dict[str, Any]:
        """The non-streamed ``chat.completion`` body."""
        choice = {"index": 0, "message": {"role": "assistant", "content": text}, "logprobs": None,
                  "finish_reason": finish_reason}
        return {**self._head("chat.completion"), "choices": [choice], "usage": usage_block}

    def chunk(self, delta: dict[str, Any], finish_reason: str | None = None) -> str:
        """One ``chat.completion.chunk`` event (``usage: null`` on it when usage was asked for)."""
        body = {**self._head("chat.completion.chunk"),
                "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}]}
        if self.include_usage:
            body["usage"] = None
        return sse(body)

    def usage_chunk(self, usage_block: dict[str, int]) -> str:
        """The extra last chunk of ``stream_options.include_usage``: no choices, the request's usage."""
        return sse({**self._head("chat.completion.chunk"), "choices": [], "usage": usage_block})


def sse(body: dict[str, Any]) -> str:
    """One Server-Sent Event carrying ``body`` as compact JSON.

    >>> sse({"a": 1})
    'data: {"a":1}\\n\\n'
    """
    return f"data: {json.dumps(body, ensure_ascii=False, separators=(',', ':'))}\n\n"
