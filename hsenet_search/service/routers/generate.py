"""Draft a report for an uploaded scan or an indexed case, grounded in its nearest indexed cases."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request

from hsenet_search.data.report_text import join_report

from ..schemas import DraftResponse, GenerateCase
from .deps import is_multipart, read_json, service, upload_doc, upload_form, validated

router = APIRouter(tags=["generate"])


@router.post(
    "/generate",
    response_model=DraftResponse,
    openapi_extra=upload_doc(GenerateCase),
    summary='The draft JSON of `generate --json` (upload in `file`, or JSON {"case": id})',
)
async def generate(request: Request, state=Depends(service)):
    if is_multipart(request):
        upload, fields = await upload_form(request, ("k", "mode", "index"), max_fields=10)
        query = validated(GenerateCase, {"case": "upload", **fields})
        index = state.index(query.index)

        def work(path):
            return state.draft(index, path, query.k, query.mode)

        return await state.pool.run(state.with_upload, upload.file, upload.filename, work)
    query = validated(GenerateCase, await read_json(request))
    index = state.index(query.index)
    case = index.case(query.case)
    path = index.path_of(index.volume_row(query.case, None))
    own = join_report(case["findings"], case["impression"])
    return await state.pool.run(state.draft, index, path, query.k, query.mode, query.case, own)
