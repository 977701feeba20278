"""Shared request helpers for the routers."""

from __future__ import annotations

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ValidationError
from starlette.datastructures import UploadFile

from hsenet_search.errors import QueryError, VolumeError

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


def is_multipart(request: Request) -> bool:
    return request.headers.get("content-type", "").lower().startswith("multipart/form-data")


async def upload_form(request: Request, fields: tuple[str, ...], *, max_fields: int) -> tuple[UploadFile, dict]:
    """The file in the multipart field ``file`` and the named form fields (``labels`` may repeat)."""
    form = await request.form(max_files=1, max_fields=max_fields)
    upload = form.get("file")
    if not isinstance(upload, UploadFile):
        raise VolumeError("the multipart body has no file in the field 'file'", "file")
    return upload, {key: form.getlist(key) if key == "labels" else form.get(key) for key in fields if key in form}


def upload_doc(query: type[BaseModel]) -> dict:
    """OpenAPI request body of an endpoint that takes a scan: multipart (``file`` plus the query's fields
    but ``case``) or the JSON query itself; both documented from the one schema."""
    schema = query.model_json_schema()
    fields = {name: spec for name, spec in schema["properties"].items() if name != "case"}
    upload = {
        "type": "string",
        "format": "binary",
        "description": ".nii, .nii.gz, .npy or a .zip of one DICOM series",
    }
    form = {"type": "object", "required": ["file"], "properties": {"file": upload, **fields}}
    content = {"multipart/form-data": {"schema": form}, "application/json": {"schema": schema}}
    return {"requestBody": {"required": True, "content": content}}


def response(result, index_name: str) -> dict:
    return {**result.to_json(), "index": index_name}
