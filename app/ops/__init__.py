"""The operators' view: server-rendered pages under `/ops` and the landing page at `/`."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles


def mount_ops(app: FastAPI) -> None:
    from app.ops.read import OverviewCache
    from app.ops.routes import router

    app.state.ops_overview = OverviewCache(app.state.settings.metrics_cache_seconds)
    app.include_router(router)
    static = Path(__file__).resolve().parent / "static"
    app.mount("/ops/static", StaticFiles(directory=static), name="ops-static")
