"""Shared request helpers for the routers."""

from __future__ import annotations

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ValidationError

from hsenet_search.errors import QueryError

from ..state import ServiceState


def service(request: Request) -> ServiceState:
    return request.app.state.service


def validated(model: type[BaseModel], data) -> BaseModel:
    """``model.model_validate(data)`` with failures answered like FastAPI's own body validation (422)."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise RequestValidationError(exc.errors()) from exc


async def read_json(request: Request):
    """The JSON body; a malformed one is a QueryError (400), not a server error."""
    import json

    try:
        return json.loads(await request.body())
    except (ValueError, UnicodeDecodeError) as exc:
        raise QueryError(f"the request body is not valid JSON ({type(exc).__name__})") from exc


def response(result, index_name: str) -> dict:
    return {**result.to_json(), "index": index_name}
