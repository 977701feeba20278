"""Request and response bodies (pydantic); hits have the same fields as ``search --json``."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from hsenet_search.engine import MAX_K, MAX_QUERY_CHARS
from hsenet_search.generate.draft import MODES

Target = Literal["volumes", "reports"]
Mode = Literal[MODES]  # the drafting modes of `generate`


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TextQuery(_Body):
    text: str = Field(min_length=1, max_length=MAX_QUERY_CHARS)
    k: int = Field(10, ge=1, le=MAX_K)
    labels: list[str] = Field(default_factory=list, max_length=18)
    hubness: bool = False
    target: Target = "volumes"
    index: str | None = None


class ReportQuery(_Body):
    text: str = Field(min_length=1, max_length=MAX_QUERY_CHARS)
    k: int = Field(10, ge=1, le=MAX_K)
    index: str | None = None


class CaseQuery(_Body):
    case: str = Field(min_length=1, max_length=200)
    k: int = Field(10, ge=1, le=MAX_K)
    labels: list[str] = Field(default_factory=list, max_length=18)
    hubness: bool = False
    target: Target = "volumes"
    index: str | None = None


class GenerateCase(_Body):
    case: str = Field(min_length=1, max_length=200)
    k: int = Field(5, ge=1, le=50)
    mode: Mode = "llm"
    index: str | None = None


class HitModel(BaseModel):
    rank: int
    score: float
    volume_name: str
    scan_id: str
    findings: str
    impression: str
    labels: list[str]
    split: str = ""
    path: str = ""
    row_id: int = -1
    report_id: int = -1
    volumes: list[str] = Field(default_factory=list)


class SearchResponse(BaseModel):
    query: str | dict
    target: str
    index: str
    hits: list[HitModel]


class ErrorResponse(BaseModel):
    detail: str
    type: str


class VolumeView(BaseModel):
    volume_name: str
    slices: dict[str, int]
    spacing: list[float]


class CaseResponse(BaseModel):
    index: str
    scan_id: str
    split: str
    findings: str
    impression: str
    labels: list[str]
    volumes: list[VolumeView]


class LocateResponse(BaseModel):
    """Where a text is in a scan (``hsenet-search locate``), plus the viewer's axial index of that image."""

    scan: str
    index: str
    volume_name: str
    text: str
    image_number: int
    z_mm: float
    bin_mm: float
    profile: list[float]
    confidence: float
    axial_index: int | None


class DraftResponse(BaseModel):
    model_config = ConfigDict(extra="allow")
    findings: str
    impression: str
