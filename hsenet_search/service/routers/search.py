"""Text, report and volume queries."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request

from ..schemas import CaseQuery, ReportQuery, SearchResponse, TextQuery
from .deps import is_multipart, read_json, response, service, upload_doc, upload_form, validated

router = APIRouter(prefix="/search", tags=["search"])


@router.post("/text", response_model=SearchResponse, summary="Text → volumes (or reports with target)")
async def search_text(body: TextQuery, state=Depends(service)):
    index = state.index(body.index)
    result = await state.pool.run(state.search_text, index, body.text, body.k, body.labels, body.hubness, body.target)
    return response(result, index.name)


@router.post("/report", response_model=SearchResponse, summary="Report text → similar reports")
async def search_report(body: ReportQuery, state=Depends(service)):
    index = state.index(body.index)
    result = await state.pool.run(state.search_text, index, body.text, body.k, (), False, "reports")
    return response(result, index.name)


@router.post(
    "/volume",
    response_model=SearchResponse,
    openapi_extra=upload_doc(CaseQuery),
    summary='A scan (multipart field `file`) or an indexed case (JSON {"case": id}) → similar cases',
)
async def search_volume(request: Request, state=Depends(service)):
    if is_multipart(request):
        upload, fields = await upload_form(request, ("k", "target", "labels", "hubness", "index"), max_fields=30)
        query = validated(CaseQuery, {"case": "upload", **fields})
        index = state.index(query.index)
        name = upload.filename or "upload"

        def work(path):
            return state.search_upload(index, path, name, query.k, query.labels, query.hubness, query.target)

        result = await state.pool.run(state.with_upload, upload.file, upload.filename, work)
        return response(result, index.name)
    query = validated(CaseQuery, await read_json(request))
    index = state.index(query.index)
    result = await state.pool.run(
        state.search_case, index, query.case, query.k, query.labels, query.hubness, query.target
    )
    return response(result, index.name)
