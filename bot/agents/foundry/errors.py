"""The service's (and the ``openai`` package's) errors as ours, keeping the service's message."""

from __future__ import annotations

from typing import Any

import openai

from ..errors import (
    AgentConnectionError,
    AgentServiceError,
    AuthenticationError,
    BadRequestError,
    BadResponseError,
    ContextTooLongError,
    NotFoundError,
    RateLimitedError,
    ServiceError,
    StreamTimeoutError,
    ThreadBusyError,
)
from ..retry import retry_after_seconds


def error_from_status(status: int, body: Any, retry_after: float | None = None) -> AgentServiceError:
    inner = body.get("error", body) if isinstance(body, dict) else {}
    inner = inner if isinstance(inner, dict) else {}
    message = str(inner.get("message") or f"HTTP {status}")
    code = str(inner["code"]) if inner.get("code") else None
    if status in (401, 403):
        return AuthenticationError(message, status=status, code=code)
    if status == 404:
        return NotFoundError(message, status=status, code=code)
    if status == 429:
        return RateLimitedError(message, status=status, code=code, retry_after=retry_after)
    if status >= 500:
        return ServiceError(message, status=status, code=code)
    if code == ContextTooLongError.CODE:
        return ContextTooLongError(message, status=status, code=code)
    if code == "conversation_locked":  # a response of the conversation is still running
        return ThreadBusyError(message, status=status, code=code)
    return BadRequestError(message, status=status, code=code)


def agent_error(exc: Exception) -> AgentServiceError:
    if isinstance(exc, AgentServiceError):
        return exc
    if isinstance(exc, openai.APIStatusError):
        retry_after = retry_after_seconds(exc.response.headers) if exc.response is not None else None
        return error_from_status(exc.status_code, exc.body if isinstance(exc.body, dict) else {}, retry_after)
    if isinstance(exc, openai.APITimeoutError):
        return StreamTimeoutError("the agent service sent nothing in time")
    if isinstance(exc, openai.APIConnectionError):
        return AgentConnectionError("cannot reach the agent service")
    return BadResponseError(f"unexpected answer from the agent service: {type(exc).__name__}")
