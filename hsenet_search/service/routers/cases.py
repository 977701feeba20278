"""Indexed cases: metadata and report, and slice PNGs rendered from the recorded volume files."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, Depends, Query
from fastapi.responses import Response

from ..render import WINDOWS
from ..schemas import CaseResponse, LocateResponse
from .deps import service

router = APIRouter(prefix="/cases", tags=["cases"])

Axis = Literal["axial", "coronal", "sagittal"]
Window = Literal[tuple(WINDOWS)]  # type: ignore[valid-type]
INDEX_NAME = Query(None, max_length=200, description="Index name (default: the first loaded index)")


@router.get("/{scan_id}", response_model=CaseResponse, summary="Metadata, report, labels and volumes of a scan")
async def case(scan_id: str, index_name: str | None = INDEX_NAME, state=Depends(service)):
    index = state.index(index_name)
    index.rows(scan_id)  # 404 before any work is queued
    return await state.pool.run(state.case, index, scan_id)


@router.get(
    "/{scan_id}/locate",
    response_model=LocateResponse,
    summary="Where a finding text is in the scan (needs a model with a localisation head)",
)
async def locate(
    scan_id: str,
    text: str = Query(..., min_length=1, max_length=2000, description="Finding text"),
    index_name: str | None = INDEX_NAME,
    state=Depends(service),
):
    loaded = state.index(index_name)
    loaded.rows(scan_id)  # 404 before any work is queued
    return await state.pool.run(state.locate, loaded, scan_id, text)


@router.get(
    "/{scan_id}/slice.png",
    response_class=Response,
    summary="One windowed slice at true aspect ratio",
    responses={200: {"content": {"image/png": {}}}},
)
async def slice_png(
    scan_id: str,
    axis: Axis = "axial",
    index: int | None = Query(None, ge=0, le=100_000, description="Slice number (default: middle)"),
    window: Window = "lung",
    volume: str | None = Query(None, max_length=200, description="Volume name (default: first)"),
    size: int | None = Query(None, ge=16, le=1024, description="Longest side in pixels"),
    index_name: str | None = INDEX_NAME,
    state=Depends(service),
):
    loaded = state.index(index_name)
    loaded.volume_row(scan_id, volume)
    png = await state.pool.run(state.slice_png, loaded, scan_id, volume, axis, index, window, size)
    return Response(png, media_type="image/png", headers={"Cache-Control": "private, max-age=3600"})
