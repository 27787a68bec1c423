from fastapi.testclient import TestClient

from app.main import create_app
from tests.support.factories import bearer, make_institution, make_token


def test_register_and_read_request(settings, engine):
    make_institution(engine, settings)
    token = make_token(engine, ["requests:read", "requests:write"])
    with TestClient(create_app(settings)) as client:
        body = {"institution": "UNIV", "alma_request_id": "A1", "citation": {"title": "T"}}
        created = client.post("/api/v1/requests", json=body, headers=bearer(token))
        assert created.status_code == 201, created.text
        again = client.post("/api/v1/requests", json=body, headers=bearer(token))
        assert again.status_code == 200
        assert again.json()["id"] == created.json()["id"]
        detail = client.get(f"/api/v1/requests/{created.json()['id']}", headers=bearer(token))
        assert detail.json()["events"][0]["kind"] == "received"
        jobs = client.get("/api/v1/jobs", headers=bearer(token)).json()
        assert [j["kind"] for j in jobs["items"]] == ["worldshare.export"]
        stats = client.get("/api/v1/stats", headers=bearer(token)).json()
        assert stats["queue_depth"] == 1
        assert client.get("/metrics").status_code == 200
