"""The committed `openapi.yaml` is this, rendered from the app itself."""

from __future__ import annotations

import yaml

from app.config import Settings


def render_openapi_yaml() -> str:
    from app.main import create_app

    # Sandbox routes are a demo aid, not part of the published interface.
    app = create_app(Settings(sandbox=False))
    return yaml.safe_dump(app.openapi(), sort_keys=False, allow_unicode=True, width=100)
