"""Sandbox mode: the simulated WorldShare and Alma served beside the bridge, on the same port.

The bridge still reaches them over real HTTP, through the URLs of the demo institution.
"""

from __future__ import annotations

from fastapi import FastAPI

from app.sandbox.alma_requester import create_alma_iso_sandbox
from app.sandbox.worldshare import create_worldshare_sandbox

WORLDSHARE_PREFIX = "/sandbox/worldshare"
ALMA_PREFIX = "/sandbox/alma"


def mount_sandboxes(app: FastAPI) -> None:
    app.mount(WORLDSHARE_PREFIX, create_worldshare_sandbox())
    app.mount(ALMA_PREFIX, create_alma_iso_sandbox())
