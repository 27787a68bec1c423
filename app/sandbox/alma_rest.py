"""A simulated Alma REST API for borrowing requests, strict where Alma is and where the guide is.

`GET|DELETE /almaws/v1/users/{user_id}/resource-sharing-requests/{request_id}` with the
`Authorization: apikey …` header. Not-found answers as Alma does (400, errorCode 40166450, in
Alma's error envelope). A DELETE without a `reason`, or whose `notify_user` is anything but
`false`, is refused: the clean-up guide says never to notify the patron. Tests seed requests
with `POST /_sandbox/rs-requests`, read every call with `GET /_sandbox/rest-calls` and make a
request's cancel fail with `POST /_sandbox/rest-faults`. Nothing here uses the bridge's code.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, Field

API_PREFIX = "/almaws/v1"
NO_RESULT = "40166450"


class SeedRequest(BaseModel):
    user_id: str = Field(min_length=1)
    request_id: str = Field(min_length=1, description="Alma's internal id")
    external_id: str | None = None
    status: str = "REQUEST_CREATED_BOR"


class RestFault(BaseModel):
    request_id: str = Field(min_length=1, description="Fail every DELETE of this request")
    status: int = Field(default=500, ge=400, le=599)


@dataclass
class AlmaRestState:
    requests: dict[str, SeedRequest] = field(default_factory=dict)
    calls: list[dict[str, Any]] = field(default_factory=list)
    failing: dict[str, int] = field(default_factory=dict)

    def find(self, user_id: str, request_id: str, *, external: bool) -> SeedRequest | None:
        for known in self.requests.values():
            if known.user_id != user_id:
                continue
            if (known.external_id if external else known.request_id) == request_id:
                return known
        return None


def _error(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse(
        {
            "errorsExist": True,
            "errorList": {"error": [{"errorCode": code, "errorMessage": message}]},
            "result": None,
        },
        status_code=status,
    )


def add_alma_rest_api(app: FastAPI) -> AlmaRestState:
    state = AlmaRestState()
    app.state.alma_rest = state
    path = f"{API_PREFIX}/users/{{user_id}}/resource-sharing-requests/{{request_id}}"

    def record(request: Request, user_id: str, request_id: str) -> None:
        state.calls.append(
            {
                "method": request.method,
                "user_id": user_id,
                "request_id": request_id,
                "query": dict(request.query_params),
            }
        )

    def unauthorised(request: Request) -> JSONResponse | None:
        key = request.headers.get("Authorization", "")
        if not key.startswith("apikey ") or not key.removeprefix("apikey ").strip():
            return _error(401, "UNAUTHORIZED", "API-key not defined or not configured to allow")
        if request.headers.get("Accept") != "application/json":
            return _error(400, "402218", "Accept header must be application/json")
        return None

    @app.get(path)
    async def read_request(request: Request, user_id: str, request_id: str) -> Response:
        record(request, user_id, request_id)
        if (refusal := unauthorised(request)) is not None:
            return refusal
        id_type = request.query_params.get("request_id_type")
        if id_type not in (None, "external"):
            return _error(400, "40166422", "Value of parameter is invalid given other parameter.")
        known = state.find(user_id, request_id, external=id_type == "external")
        if known is None:
            return _error(400, NO_RESULT, "No result found for given parameters.")
        return JSONResponse(
            {
                "request_id": known.request_id,
                "external_id": known.external_id,
                "status": {"value": known.status},
            }
        )

    @app.delete(path)
    async def cancel_request(request: Request, user_id: str, request_id: str) -> Response:
        record(request, user_id, request_id)
        if (refusal := unauthorised(request)) is not None:
            return refusal
        query = request.query_params
        if not query.get("reason"):
            return _error(400, "401652", "General Error: a cancel reason is required.")
        if query.get("notify_user") != "false":
            return _error(400, "40166422", "The patron must not be notified: notify_user=false.")
        if request_id in state.failing:
            return _error(state.failing[request_id], "401652", "General Error.")
        known = state.find(user_id, request_id, external=False)
        if known is None:
            return _error(400, NO_RESULT, "No result found for given parameters.")
        known.status = "CANCELED"
        return Response(status_code=204)

    @app.post("/_sandbox/rs-requests", status_code=201)
    async def seed(seeded: SeedRequest) -> SeedRequest:
        state.requests[seeded.request_id] = seeded
        return seeded

    @app.get("/_sandbox/rs-requests/{request_id}")
    async def show(request_id: str) -> Response:
        known = state.requests.get(request_id)
        if known is None:
            return _error(404, NO_RESULT, "unknown")
        return JSONResponse(known.model_dump())

    @app.get("/_sandbox/rest-calls")
    async def calls() -> list[dict[str, Any]]:
        return state.calls

    @app.post("/_sandbox/rest-faults")
    async def fail(fault: RestFault) -> RestFault:
        state.failing[fault.request_id] = fault.status
        return fault

    return state
