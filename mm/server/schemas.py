"""Request bodies, as pydantic models that refuse unknown fields (no setting is accepted and ignored).

>>> req = ChatCompletionRequest.model_validate({"model": "m", "messages": [{"role": "user", "content": "Hi"}]})
>>> req.stream, req.n, req.stop_list()
(False, 1, [])
>>> ChatCompletionRequest.model_validate({"model": "m", "messages": [], "logprobs": True})
Traceback (most recent call last):
...
pydantic_core._pydantic_core.ValidationError: 2 validation errors for ChatCompletionRequest
...
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ImageURL(_Strict):
    url: str
    detail: Literal["auto", "low", "high"] | None = None


class TextPart(_Strict):
    type: Literal["text"]
    text: str


class ImagePart(_Strict):
    type: Literal["image_url"]
    image_url: ImageURL


ContentPart = Annotated[TextPart | ImagePart, Field(discriminator="type")]


class ChatMessage(_Strict):
    role: Literal["system", "user", "assistant"]
    content: str | list[ContentPart]

    def has_image(self) -> bool:
        return isinstance(self.content, list) and any(isinstance(p, ImagePart) for p in self.content)


class StreamOptions(_Strict):
    include_usage: bool = False


class ChatCompletionRequest(_Strict):
    model: str
    messages: list[ChatMessage] = Field(min_length=1)
    stream: bool = False
    stream_options: StreamOptions | None = None
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, gt=0, le=1)
    seed: int | None = None
    stop: str | list[str] | None = None
    n: int | None = 1

    def stop_list(self) -> list[str]:
        if self.stop is None:
            return []
        return [self.stop] if isinstance(self.stop, str) else list(self.stop)

    def has_image(self) -> bool:
        return any(m.has_image() for m in self.messages)


class EmbeddingRequest(_Strict):
    model: str
    input: str | list[str]
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = Field(default=None, ge=1)

    def texts(self) -> list[str]:
        return [self.input] if isinstance(self.input, str) else list(self.input)


class SpeechRequest(_Strict):
    model: str
    input: str
    voice: str | None = None
    response_format: Literal["wav"] = "wav"
    speed: float | None = None
    stream_format: Literal["audio"] | None = None


class SearchRequest(_Strict):
    query: str
    k: int = Field(default=10, ge=1, le=1000)
    filters: dict[str, Any] | None = None
    hybrid: bool = False
    model: str | None = None
