"""Run the `illbridge` command as an operator would: a subprocess configured by environment."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import SECRET_KEY

ROOT = Path(__file__).resolve().parent.parent.parent


def illbridge(
    database_url: str,
    *args: str,
    secret_key: str | None = SECRET_KEY,
    env: dict[str, str] | None = None,
    timeout: float = 60,
) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("ILLBRIDGE_")}
    environment["ILLBRIDGE_DATABASE_URL"] = database_url
    environment["PYTHONPATH"] = str(ROOT)
    if secret_key is not None:
        environment["ILLBRIDGE_SECRET_KEY"] = secret_key
    environment |= env or {}
    return subprocess.run(
        [sys.executable, "-m", "app.cli", *args],
        env=environment,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def no_traceback(result: subprocess.CompletedProcess[str]) -> None:
    assert "Traceback" not in result.stderr + result.stdout, result.stderr
