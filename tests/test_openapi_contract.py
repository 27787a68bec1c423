"""The committed openapi.yaml is exactly what the app serves."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import yaml
from fastapi.testclient import TestClient

from app.config import Settings
from app.main import create_app
from app.openapi import render_openapi_yaml

COMMITTED = Path(__file__).resolve().parent.parent / "openapi.yaml"
HOW_TO_FIX = "openapi.yaml is stale: run `illbridge openapi` and commit the result"


def test_committed_openapi_yaml_is_current():
    assert COMMITTED.exists(), HOW_TO_FIX
    assert COMMITTED.read_text() == render_openapi_yaml(), HOW_TO_FIX


def test_the_document_is_the_one_the_app_serves():
    # Not entered as a context: the document needs no database and no secret key.
    served = TestClient(create_app(Settings(sandbox=False))).get("/openapi.json").json()
    assert yaml.safe_load(render_openapi_yaml()) == served


def test_illbridge_openapi_writes_the_document(tmp_path):
    target = tmp_path / "openapi.yaml"
    result = subprocess.run(
        [sys.executable, "-m", "app.cli", "openapi", "--output", str(target)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={"PATH": "", "PYTHONPATH": str(COMMITTED.parent)},
    )
    assert result.returncode == 0, result.stderr
    assert target.read_text() == render_openapi_yaml()
