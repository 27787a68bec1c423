"""The route class of every REST router: the bearer token is judged before the body is.

FastAPI decodes a JSON body before it runs a route's dependencies, so a body that is not JSON
would be answered 400/422 even to a caller without a token, or without the scope to write. Here
such a body is passed on raw, as FastAPI passes a body of another media type, so validation
refuses it only after the token checks ran; `request.state.unparsable_body` tells the error
handler why.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import Request, Response
from fastapi.routing import APIRoute


class _BodyDecodedLate(Request):
    async def json(self) -> Any:
        try:
            return await super().json()
        except ValueError:  # not JSON, or not UTF-8 (UnicodeDecodeError is a ValueError)
            self.state.unparsable_body = True
            return await self.body()


class AuthFirstRoute(APIRoute):
    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def judge_token_first(request: Request) -> Response:
            return await handler(_BodyDecodedLate(request.scope, request.receive))

        return judge_token_first
