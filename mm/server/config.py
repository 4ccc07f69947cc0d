"""The server's settings: which models to load and the limits every request is held to.

>>> cfg = ServerConfig(chat_model="/models/LFM2-350M", api_key="s3cret")
>>> cfg.has_key, cfg.max_file_bytes
(True, 26214400)
>>> ServerConfig(queue_size=0)
Traceback (most recent call last):
...
mm.errors.InvalidInputError: queue_size must be a positive integer, got 0
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from mm.errors import InvalidInputError
from mm.validation import parse_size


@dataclass(frozen=True)
class ServerConfig:
    """What ``mm serve --api`` loads and how it limits requests (every model is optional)."""

    chat_model: str | Path | None = None
    vqa_model: str | Path | None = None
    speech_model: str | Path | None = None
    embedding_model: str | Path | None = None
    search_index: str | Path | None = None
    api_key: str | None = None
    max_file_size: str | int = "25mb"
    allow_local_files: bool = False
    queue_size: int = 64  # waiting requests per model before 429
    batch_size: int = 8  # chat requests generated together
    max_new_tokens: int = 512  # the largest max_tokens a request may ask for
    device: str = "auto"
    dtype: str = "auto"

    def __post_init__(self) -> None:
        for name in ("queue_size", "batch_size", "max_new_tokens"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise InvalidInputError(f"{name} must be a positive integer, got {value!r}")
        parse_size(self.max_file_size)
        if self.api_key is not None and not self.api_key.strip():
            raise InvalidInputError("the API key is empty; pass a non-empty --api-key (or MM_API_KEY) or none")

    @property
    def has_key(self) -> bool:
        return self.api_key is not None

    @property
    def max_file_bytes(self) -> int:
        """Largest uploaded file or decoded image, in bytes."""
        return parse_size(self.max_file_size)

    @property
    def max_body_bytes(self) -> int:
        """Largest request body: a file as base64 (4/3 larger) plus 1 MiB for the rest of the JSON or form."""
        return self.max_file_bytes * 4 // 3 + 1024 * 1024
