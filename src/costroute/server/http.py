"""ASGI plumbing: read a body, send JSON, bytes or an error."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from costroute.server.errors import ApiError

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
Headers = list[tuple[bytes, bytes]]

MAX_BODY_BYTES = 16 * 1024 * 1024
JSON = b"application/json"


def header(scope: Scope, name: bytes) -> str | None:
    """A request header's value (`name` in lower case), or None."""
    for key, value in scope["headers"]:
        if key == name:
            return str(value.decode("latin-1"))
    return None


async def read_body(receive: Receive) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ApiError(400, "the client closed the connection mid-request")
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise ApiError(413, f"request body over {MAX_BODY_BYTES} bytes")
        chunks.append(chunk)
        if not message.get("more_body"):
            return b"".join(chunks)


async def send_bytes(
    send: Send,
    status: int,
    body: bytes,
    content_type: bytes = JSON,
    headers: Iterable[tuple[bytes, bytes]] = (),
) -> None:
    start: Headers = [
        (b"content-type", content_type),
        (b"content-length", str(len(body)).encode()),
        *headers,
    ]
    await send({"type": "http.response.start", "status": status, "headers": start})
    await send({"type": "http.response.body", "body": body})


async def send_json(
    send: Send,
    status: int,
    payload: object,
    headers: Iterable[tuple[bytes, bytes]] = (),
) -> None:
    await send_bytes(send, status, json.dumps(payload).encode(), JSON, headers)


async def send_error(
    send: Send, error: ApiError, headers: Iterable[tuple[bytes, bytes]] = ()
) -> None:
    extra = list(headers)
    if not error.retry:
        # OpenAI's clients retry 429 and 5xx unless told not to.
        extra.append((b"x-should-retry", b"false"))
    await send_bytes(send, error.status, error.body(), JSON, extra)


async def start_stream(send: Send, headers: Iterable[tuple[bytes, bytes]]) -> None:
    start: Headers = [
        (b"content-type", b"text/event-stream"),
        (b"cache-control", b"no-cache"),
        *headers,
    ]
    await send({"type": "http.response.start", "status": 200, "headers": start})


async def stream_chunk(send: Send, data: bytes, more: bool = True) -> None:
    await send({"type": "http.response.body", "body": data, "more_body": more})
