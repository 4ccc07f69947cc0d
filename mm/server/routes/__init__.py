"""One module of FastAPI routes per endpoint family; :data:`ROUTERS` lists them for the app factory."""

from mm.server.routes import audio, chat, embeddings, models, search

ROUTERS = [models.router, chat.router, audio.router, embeddings.router, search.router]
