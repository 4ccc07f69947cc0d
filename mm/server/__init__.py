"""``mm serve --api``: an OpenAI-compatible HTTP API over mm's pipelines (FastAPI + uvicorn).

Endpoints: ``GET /v1/models``, ``POST /v1/chat/completions``, ``POST /v1/audio/transcriptions``,
``POST /v1/audio/speech``, ``POST /v1/embeddings`` and mm's ``POST /v1/search``. Build the app with
:func:`create_app` from a :class:`ServerConfig`; ``mm serve --api`` runs it under uvicorn.

>>> from mm.server import ServerConfig
>>> ServerConfig(max_file_size="1mb").max_file_bytes
1048576
"""


from mm.server.app import create_app
from mm.server.config import ServerConfig

__all__ = ["ServerConfig", "create_app"]
