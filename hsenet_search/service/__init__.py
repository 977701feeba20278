"""The search service: a FastAPI app over one or more loaded indexes, and the web viewer it serves.

``create_app(config)`` builds the app (engines loaded once); ``hsenet-search serve`` runs it on uvicorn.
Layout: ``config`` (settings), ``state`` (engines, worker pool, caches), ``schemas`` (pydantic bodies),
``security`` (bearer token, bind rules, body limits), ``uploads`` (size and decompression-bomb guards),
``render`` (slice PNGs), ``metrics`` (Prometheus), ``routers/`` (endpoints), ``static/`` (the page).
"""

from .app import create_app
from .config import ServiceConfig

__all__ = ["ServiceConfig", "create_app"]
