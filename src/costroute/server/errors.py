"""Errors a client can act on, in the OpenAI error shape."""

from __future__ import annotations

import json


class ApiError(Exception):
    """A refused or failed request: an HTTP status and a message with the fix.

    The body is OpenAI's: `{"error": {"message", "type", "param", "code"}}`, so
    OpenAI clients raise their usual exception for each status.
    """

    def __init__(
        self,
        status: int,
        message: str,
        *,
        kind: str = "invalid_request_error",
        code: str | None = None,
        retry: bool = True,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.kind = kind
        self.code = code
        self.retry = retry

    def body(self) -> bytes:
        error = {
            "message": self.message,
            "type": self.kind,
            "param": None,
            "code": self.code,
        }
        return json.dumps({"error": error}).encode()


def bad_request(message: str, code: str = "invalid_request") -> ApiError:
    return ApiError(400, message, code=code)


def not_found(message: str, code: str = "model_not_found") -> ApiError:
    return ApiError(404, message, code=code)


def unauthorized(message: str) -> ApiError:
    return ApiError(401, message, code="invalid_api_key", retry=False)
