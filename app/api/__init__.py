"""The REST routers, assembled."""

from fastapi import APIRouter

from app.api import cleanup, health, institutions, jobs, requests, tasks, tokens

router = APIRouter()
router.include_router(health.router)
router.include_router(institutions.router)
router.include_router(requests.router)
router.include_router(jobs.router)
router.include_router(tokens.router)
router.include_router(tasks.router)
router.include_router(cleanup.router)
