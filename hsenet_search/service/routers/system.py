"""Health, the loaded indexes and Prometheus metrics."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST

from .deps import service

public = APIRouter(tags=["system"])
router = APIRouter(tags=["system"])


@public.get("/health", summary="Ready when every index is loaded")
def health(request: Request):
    state = getattr(request.app.state, "service", None)
    if state is None or not state.ready:
        return JSONResponse({"status": "loading", "indexes": 0}, status_code=503, headers={"Retry-After": "2"})
    return {"status": "ready", "indexes": len(state.indexes), "jobs_in_flight": state.pool.in_flight}


@router.get("/indexes", summary="Manifest summaries of the loaded indexes")
def indexes(state=Depends(service)):
    out = []
    for name, loaded in state.indexes.items():
        m = loaded.engine.manifest
        out.append(
            {
                "name": name,
                "model_name": m.model_name,
                "model_fingerprint": m.model_fingerprint,
                "embedding": m.embedding,
                "dims": m.dims,
                "factory": m.factory,
                "counts": m.counts,
                "created": m.created,
                "hubness": bool(loaded.engine.hubness),
                "localisation": bool(getattr(loaded.engine.model, "has_localisation_head", False)),
            }
        )
    return {"indexes": out}


@router.get("/metrics", summary="Prometheus metrics", response_class=Response)
def metrics(state=Depends(service)):
    state.metrics.in_flight.set(state.pool.in_flight)
    return Response(state.metrics.render(), media_type=CONTENT_TYPE_LATEST)
