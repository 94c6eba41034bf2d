"""A fake OpenAI-compatible chat completions server for tests and benchmarks.

It is a real HTTP/1.1 server on loopback, so clients exercise their whole
network stack: connection pooling, timeouts, retries and SSE parsing. Tests run
it in a background thread with ``with FakeServer() as server:``; benchmarks run
it as its own process with ``python -m tests.fakeserver --port 0``, which prints
``READY <base_url>`` once it accepts connections.

Behaviour is set through plain attributes that tests may change between
requests. Replace mappings rather than mutating them while requests are in
flight.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import logging
import re
import selectors
import signal
import socket
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import FrameType, TracebackType
from typing import Any, Literal, NamedTuple, cast, get_args

logger = logging.getLogger(__name__)

FaultKind = Literal["429", "500", "503", "timeout", "drop", "malformed", "bad_shape"]
FAULT_KINDS: frozenset[str] = frozenset(get_args(FaultKind))

Json = dict[str, Any]
AnswerFn = Callable[[Json], str]
ModelAnswer = AnswerFn | Mapping[str, str]

# A pending connect waits in the listen backlog; the stdlib default of 5 makes a
# burst of 64 clients hit SYN retries that cost a second each.
_LISTEN_BACKLOG = 1024
_JOIN_TIMEOUT_S = 2.0
_WORD_PIECE = re.compile(r"\s*\S+|\s+$")


class RecordedRequest(NamedTuple):
    """The model and messages of one chat completion request."""

    model: str
    messages: list[Json]


@dataclass(frozen=True)
class _Fault:
    kind: FaultKind
    retry_after_s: float | None
    model: str | None


@dataclass(frozen=True)
class _Reply:
    content: str
    finish_reason: str
    usage: Json


class FakeServer:
    """An OpenAI-compatible server on 127.0.0.1 with scriptable answers and faults."""

    def __init__(
        self,
        *,
        models: Sequence[str] = ("fake-model",),
        latency_ms: float = 0.0,
        default_answer: str = "ok",
        answers: Mapping[str, str] | None = None,
        require_key: str | None = None,
        hang_s: float = 30.0,
        port: int = 0,
        max_recorded: int = 10_000,
    ) -> None:
        self.models = list(models)
        self.latency_ms = latency_ms
        self.default_answer = default_answer
        self.answers: Mapping[str, str] = dict(answers or {})
        self.answer: AnswerFn = self.answer_from_table
        self.model_answers: dict[str, ModelAnswer] = {}
        self.prompt_tokens: int | None = None
        self.completion_tokens: int | None = None
        self.cached_tokens: int | None = None
        self.reported_cost: float | None = None
        self.require_key = require_key
        self.hang_s = hang_s

        self._port = port
        self._lock = threading.Lock()
        self._faults: list[_Fault] = []
        self._calls = 0
        self._calls_by_model: dict[str, int] = {}
        self._completed = 0
        self._requests: deque[RecordedRequest] = deque(maxlen=max_recorded)
        self._last_request_json: Json | None = None
        self._ids = itertools.count(1)
        self._stopping = threading.Event()
        self._connections: dict[socket.socket, threading.Thread] = {}
        self._httpd: _HTTPServer | None = None
        self._wakeup: tuple[socket.socket, socket.socket] | None = None
        self._thread: threading.Thread | None = None

    def __enter__(self) -> FakeServer:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    @property
    def port(self) -> int:
        if self._port == 0:
            raise RuntimeError("FakeServer is not started")
        return self._port

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self) -> None:
        """Bind the port and accept connections in a daemon thread until `close`."""
        if self._httpd is not None or self._stopping.is_set():
            raise RuntimeError("FakeServer can be started only once")
        self._httpd = _HTTPServer(("127.0.0.1", self._port), self)
        self._port = int(self._httpd.server_address[1])
        self._wakeup = socket.socketpair()
        self._thread = threading.Thread(
            target=self._serve,
            args=(self._httpd, self._wakeup[0]),
            name="fakeserver",
            daemon=True,
        )
        self._thread.start()

    def close(self) -> None:
        """Stop serving, waking any request that hangs or sleeps."""
        httpd, thread, wakeup = self._httpd, self._thread, self._wakeup
        if httpd is None or thread is None or wakeup is None:
            return
        self._httpd, self._thread, self._wakeup = None, None, None
        self._stopping.set()
        wakeup[1].send(b"\0")
        thread.join()
        httpd.server_close()
        for sock in wakeup:
            sock.close()

        # Idle keep-alive connections block in a read; shutting the sockets
        # down ends their handler threads instead of leaving them to linger.
        with self._lock:
            connections = dict(self._connections)
        for sock in connections:
            _shutdown_socket(sock)
        deadline = time.monotonic() + _JOIN_TIMEOUT_S
        for handler_thread in connections.values():
            handler_thread.join(max(0.0, deadline - time.monotonic()))

    def _serve(self, httpd: _HTTPServer, wake_reader: socket.socket) -> None:
        # serve_forever notices shutdown only at its next poll, which would
        # add the poll interval to every test; a wake-up socket ends it at once.
        httpd.timeout = 0
        with selectors.DefaultSelector() as selector:
            selector.register(httpd.socket, selectors.EVENT_READ)
            selector.register(wake_reader, selectors.EVENT_READ)
            while not self._stopping.is_set():
                for key, _ in selector.select():
                    if key.fileobj is httpd.socket and not self._stopping.is_set():
                        httpd.handle_request()

    def fail_next(
        self,
        kind: FaultKind,
        count: int = 1,
        retry_after: float | None = None,
        model: str | None = None,
    ) -> None:
        """Queue `count` faults, each consumed by one later matching request."""
        if kind not in FAULT_KINDS:
            raise ValueError(
                f"unknown fault {kind!r}; use one of {sorted(FAULT_KINDS)}"
            )
        if count < 0:
            raise ValueError(f"count must be >= 0, got {count}")
        fault = _Fault(kind=kind, retry_after_s=retry_after, model=model)
        with self._lock:
            self._faults.extend([fault] * count)

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()

    @property
    def pending_faults(self) -> int:
        with self._lock:
            return len(self._faults)

    def reset_counts(self) -> None:
        """Forget calls, completions and recorded requests; queued faults stay."""
        with self._lock:
            self._calls = 0
            self._calls_by_model = {}
            self._completed = 0
            self._requests.clear()
            self._last_request_json = None

    @property
    def calls(self) -> int:
        """Chat completion requests received, including faulted and refused ones."""
        with self._lock:
            return self._calls

    @property
    def calls_by_model(self) -> dict[str, int]:
        with self._lock:
            return dict(self._calls_by_model)

    @property
    def completed(self) -> int:
        """Chat completions answered with a well-formed 200 response, as sent."""
        with self._lock:
            return self._completed

    @property
    def requests(self) -> list[RecordedRequest]:
        """The most recent requests as (model, messages), oldest first."""
        with self._lock:
            return list(self._requests)

    @property
    def last_request_json(self) -> Json | None:
        with self._lock:
            return self._last_request_json

    def answer_from_table(self, request: Json) -> str:
        """Reply with the first `answers` key found in the last user message."""
        return _lookup(self.answers, request, self.default_answer)

    def _resolve_answer(self, request: Json) -> str:
        override = self.model_answers.get(str(request.get("model", "")))
        if override is None:
            return self.answer(request)
        if isinstance(override, Mapping):
            return _lookup(override, request, self.default_answer)
        return override(request)

    def _reply(self, request: Json) -> _Reply:
        content = self._resolve_answer(request)
        finish_reason = "stop"
        limit = request.get("max_completion_tokens") or request.get("max_tokens")
        words = content.split()
        if isinstance(limit, int) and len(words) > limit:
            content, finish_reason = " ".join(words[:limit]), "length"
        return _Reply(content, finish_reason, self._usage(request, content))

    def _usage(self, request: Json, content: str) -> Json:
        prompt_tokens = self.prompt_tokens
        if prompt_tokens is None:
            prompt_tokens = max(1, _count_prompt_words(request.get("messages")))
        completion_tokens = self.completion_tokens
        if completion_tokens is None:
            completion_tokens = len(content.split())
        usage: Json = {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        }
        if self.cached_tokens is not None:
            usage["prompt_tokens_details"] = {"cached_tokens": self.cached_tokens}
        if self.reported_cost is not None:
            # OpenRouter's own charge, as it reports it in usage.cost.
            usage["cost"] = self.reported_cost
        return usage

    def _record_call(self, request: Json | None) -> None:
        with self._lock:
            self._calls += 1
            if request is None:
                return
            model = str(request.get("model", ""))
            self._calls_by_model[model] = self._calls_by_model.get(model, 0) + 1
            messages = request.get("messages")
            self._requests.append(
                RecordedRequest(model, messages if isinstance(messages, list) else [])
            )
            self._last_request_json = request

    def _record_completed(self) -> None:
        with self._lock:
            self._completed += 1

    def _take_fault(self, model: str) -> _Fault | None:
        with self._lock:
            for index, fault in enumerate(self._faults):
                if fault.model is None or fault.model == model:
                    return self._faults.pop(index)
        return None

    def _next_id(self) -> str:
        return f"chatcmpl-fake-{next(self._ids)}"

    def _sleep(self, seconds: float) -> None:
        """Sleep, but return at once when the server is closing."""
        if seconds > 0:
            self._stopping.wait(seconds)

    def _track(self, sock: socket.socket) -> None:
        with self._lock:
            if self._stopping.is_set():
                _shutdown_socket(sock)
                return
            self._connections[sock] = threading.current_thread()

    def _untrack(self, sock: socket.socket) -> None:
        with self._lock:
            self._connections.pop(sock, None)


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = _LISTEN_BACKLOG

    def __init__(self, address: tuple[str, int], fake: FakeServer) -> None:
        self.fake = fake
        super().__init__(address, _Handler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # Clients that time out or give up reset their connections; that is
        # expected traffic here, not a server bug.
        exc = sys.exc_info()[1]
        if isinstance(exc, ConnectionError):
            logger.debug("client %s went away: %s", client_address, exc)
            return
        logger.exception("fakeserver failed on a request from %s", client_address)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Headers and body go out in separate writes; Nagle would hold the body
    # back until the client's delayed ACK, adding ~40 ms to every response.
    disable_nagle_algorithm = True
    server: _HTTPServer

    def setup(self) -> None:
        super().setup()
        self.server.fake._track(self.connection)

    def finish(self) -> None:
        self.server.fake._untrack(self.connection)
        super().finish()

    def log_message(self, format: str, *args: Any) -> None:
        # The stdlib writes an access line per request to stderr; benchmarks
        # send thousands, so stay silent unless debugging.
        if logger.isEnabledFor(logging.DEBUG):
            logger.debug("%s " + format, self.address_string(), *args)

    def do_GET(self) -> None:
        if self._route() != "/v1/models":
            self._send_error(404, f"no route GET {self.path}", "invalid_request_error")
            return
        if not self._authorized():
            return
        data = [
            {"id": model, "object": "model", "created": 0, "owned_by": "fakeserver"}
            for model in self.server.fake.models
        ]
        self._send_json(200, {"object": "list", "data": data})

    def do_POST(self) -> None:
        body = self._read_body()
        if self._route() != "/v1/chat/completions":
            self._send_error(404, f"no route POST {self.path}", "invalid_request_error")
            return
        fake = self.server.fake
        request = _parse_request(body)
        fake._record_call(request)
        if not self._authorized():
            return
        if request is None:
            self._send_error(
                400, "body must be JSON with messages", "invalid_request_error"
            )
            return

        fault = fake._take_fault(str(request.get("model", "")))
        if fault is not None and fault.kind == "timeout":
            self._hang()
            return
        fake._sleep(fake.latency_ms / 1000)
        if fault is not None:
            self._send_fault(fault, request)
            return
        self._send_completion(request)

    def _route(self) -> str:
        return self.path.split("?", 1)[0].rstrip("/")

    def _read_body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length > 0 else b""

    def _authorized(self) -> bool:
        key = self.server.fake.require_key
        if key is None or self.headers.get("Authorization") == f"Bearer {key}":
            return True
        self._send_error(
            401,
            "Incorrect API key provided.",
            "invalid_request_error",
            "invalid_api_key",
        )
        return False

    def _send_completion(self, request: Json) -> None:
        fake = self.server.fake
        reply = fake._reply(request)
        # Count before sending so a client that has its answer sees the count.
        fake._record_completed()
        if request.get("stream"):
            self._send_stream(request, reply)
        else:
            self._send_json(200, _completion_json(fake._next_id(), request, reply))

    def _send_stream(self, request: Json, reply: _Reply) -> None:
        options = request.get("stream_options")
        include_usage = isinstance(options, dict) and bool(options.get("include_usage"))
        chunks = _stream_chunks(
            self.server.fake._next_id(), request, reply, include_usage
        )
        self._send_events(json.dumps(chunk) for chunk in chunks)

    def _send_fault(self, fault: _Fault, request: Json) -> None:
        if fault.kind == "drop":
            self.close_connection = True
        elif fault.kind == "429":
            self._send_error(
                429,
                "Rate limit reached for requests.",
                "requests",
                "rate_limit_exceeded",
                _retry_headers(fault.retry_after_s),
            )
        elif fault.kind in ("500", "503"):
            self._send_server_error(int(fault.kind), fault.retry_after_s)
        elif fault.kind == "malformed":
            self._send_malformed(request)
        else:
            self._send_bad_shape(request)

    def _send_server_error(self, status: int, retry_after_s: float | None) -> None:
        code = "service_unavailable" if status == 503 else None
        message = "The server had an error while processing your request."
        headers = _retry_headers(retry_after_s)
        self._send_error(status, message, "server_error", code, headers)

    def _send_malformed(self, request: Json) -> None:
        if request.get("stream"):
            self._send_events(['{"choices": [{"delta": '])
        else:
            self._send_bytes(200, b'{"id": "chatcmpl-broken", "choices": [')

    def _send_bad_shape(self, request: Json) -> None:
        shape = {"id": self.server.fake._next_id(), "model": request.get("model")}
        if request.get("stream"):
            self._send_events([json.dumps(shape)])
        else:
            self._send_json(200, shape)

    def _hang(self) -> None:
        """Answer nothing for `hang_s`, then drop the connection."""
        self.server.fake._sleep(self.server.fake.hang_s)
        self.close_connection = True

    def _send_error(
        self,
        status: int,
        message: str,
        error_type: str,
        code: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        error = {"message": message, "type": error_type, "param": None, "code": code}
        self._send_json(status, {"error": error}, headers)

    def _send_json(
        self, status: int, payload: Json, headers: Mapping[str, str] | None = None
    ) -> None:
        self._send_bytes(status, json.dumps(payload).encode(), headers)

    def _send_bytes(
        self, status: int, body: bytes, headers: Mapping[str, str] | None = None
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def _send_events(self, events: Iterable[str]) -> None:
        """Send SSE `data:` events in chunked encoding, ending with [DONE]."""
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        for event in itertools.chain(events, ["[DONE]"]):
            data = f"data: {event}\n\n".encode()
            self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
        self.wfile.write(b"0\r\n\r\n")


def _completion_json(completion_id: str, request: Json, reply: _Reply) -> Json:
    message = {"role": "assistant", "content": reply.content}
    choice = {
        "index": 0,
        "message": message,
        "logprobs": None,
        "finish_reason": reply.finish_reason,
    }
    return {
        "id": completion_id,
        "object": "chat.completion",
        "created": int(time.time()),
        "model": request.get("model"),
        "choices": [choice],
        "usage": reply.usage,
    }


def _stream_chunks(
    completion_id: str, request: Json, reply: _Reply, include_usage: bool
) -> list[Json]:
    base: Json = {
        "id": completion_id,
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": request.get("model"),
    }
    # OpenAI sends null usage on every chunk once usage is asked for.
    if include_usage:
        base["usage"] = None
    deltas: list[tuple[Json, str | None]] = [
        ({"role": "assistant", "content": ""}, None)
    ]
    deltas += [
        ({"content": piece}, None) for piece in _WORD_PIECE.findall(reply.content)
    ]
    deltas.append(({}, reply.finish_reason))
    chunks = [
        base | {"choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
        for delta, finish in deltas
    ]
    if include_usage:
        chunks.append(base | {"choices": [], "usage": reply.usage})
    return chunks


def _retry_headers(retry_after_s: float | None) -> dict[str, str]:
    if retry_after_s is None:
        return {}
    seconds = (
        int(retry_after_s) if retry_after_s == int(retry_after_s) else retry_after_s
    )
    return {
        "Retry-After": str(seconds),
        "retry-after-ms": str(round(retry_after_s * 1000)),
    }


def _parse_request(body: bytes) -> Json | None:
    try:
        request = json.loads(body)
    except ValueError:
        return None
    if not isinstance(request, dict) or not isinstance(request.get("messages"), list):
        return None
    return cast(Json, request)


def _message_text(message: object) -> str:
    """The text of a message whose content is a string or a list of parts."""
    if not isinstance(message, dict):
        return ""
    content = message.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = [part.get("text") for part in content if isinstance(part, dict)]
        return " ".join(part for part in parts if isinstance(part, str))
    return ""


def _count_prompt_words(messages: object) -> int:
    if not isinstance(messages, list):
        return 0
    return sum(len(_message_text(message).split()) for message in messages)


def _last_user_text(request: Json) -> str:
    messages = request.get("messages")
    if not isinstance(messages, list):
        return ""
    for message in reversed(messages):
        if isinstance(message, dict) and message.get("role") == "user":
            return _message_text(message)
    return ""


def _lookup(table: Mapping[str, str], request: Json, default: str) -> str:
    text = _last_user_text(request)
    # Copy first: a test may swap entries while a handler thread reads them.
    for substring, reply in tuple(table.items()):
        if substring in text:
            return reply
    return default


def _shutdown_socket(sock: socket.socket) -> None:
    # The handler thread may have closed the socket already.
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m tests.fakeserver",
        description="Serve a fake OpenAI-compatible API on 127.0.0.1.",
    )
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--latency-ms", type=float, default=0.0)
    parser.add_argument(
        "--model",
        action="append",
        dest="models",
        help="a model to list at /v1/models (repeatable; default fake-model)",
    )
    parser.add_argument("--default-answer", default="ok")
    parser.add_argument(
        "--answers",
        type=Path,
        help="JSON file mapping a substring of the last user message to a reply",
    )
    parser.add_argument("--require-key", help="refuse requests without this key")
    return parser.parse_args(argv)


def _load_answers(path: Path | None) -> dict[str, str]:
    if path is None:
        return {}
    table = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(table, dict) or not all(
        isinstance(value, str) for value in table.values()
    ):
        raise SystemExit(f"Error: {path} must hold a JSON object of strings")
    return {str(key): value for key, value in table.items()}


def main(argv: Sequence[str] | None = None) -> int:
    """Serve until SIGTERM or Ctrl-C; print `READY <base_url>` once listening."""
    args = _parse_args(argv)
    stop = threading.Event()

    def request_stop(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, request_stop)
    server = FakeServer(
        models=args.models or ("fake-model",),
        latency_ms=args.latency_ms,
        default_answer=args.default_answer,
        answers=_load_answers(args.answers),
        require_key=args.require_key,
        port=args.port,
    )
    with server:
        print(f"READY {server.base_url}", flush=True)
        try:
            stop.wait()
        except KeyboardInterrupt:
            return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
