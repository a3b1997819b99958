"""Typed errors of the agent service, each carrying the service's own message."""

from __future__ import annotations

import re

__all__ = [
    "AgentConnectionError",
    "AgentServiceError",
    "AuthenticationError",
    "BadRequestError",
    "BadResponseError",
    "ContextTooLongError",
    "NotFoundError",
    "RateLimitedError",
    "ServiceError",
    "StreamInterruptedError",
    "StreamTimeoutError",
    "ThreadBusyError",
]


class AgentServiceError(Exception):
    """Base class. ``str(err)`` is a one-line, user-safe explanation (never a token)."""

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        code: str | None = None,
        request_id: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.code = code
        self.request_id = request_id

    def __str__(self) -> str:
        where = f" (HTTP {self.status})" if self.status else ""
        return f"{self.message}{where}"


class AuthenticationError(AgentServiceError):
    """401/403: the token is missing, expired or lacks the role on the project."""


class NotFoundError(AgentServiceError):
    """404: the agent, thread or run does not exist (or the endpoint is wrong)."""


class BadRequestError(AgentServiceError):
    """400: the service refused the request's content."""


_BUSY = re.compile(
    r"(?:already has an active run (?P<run>\S+?)\.?$)|(?:while a run (?P<run2>\S+) is active)",
    re.IGNORECASE,
)
_THREAD = re.compile(r"\b(thread_[A-Za-z0-9]+)")


class ThreadBusyError(BadRequestError):
    """400: the thread has an active run; wait for it (or cancel it) and try again."""

    def __init__(self, message: str, **kwargs: object) -> None:
        super().__init__(message, **kwargs)  # type: ignore[arg-type]
        busy = _BUSY.search(message)
        self.active_run_id = (busy.group("run") or busy.group("run2")) if busy else None
        thread = _THREAD.search(message)
        self.thread_id = thread.group(1) if thread else None

    @staticmethod
    def matches(message: str) -> bool:
        lowered = message.lower()
        return "already has an active run" in lowered or ("while a run" in lowered and "is active" in lowered)


class ContextTooLongError(BadRequestError):
    """400 ``context_length_exceeded``: the conversation no longer fits the model's context."""

    CODE = "context_length_exceeded"


class RateLimitedError(AgentServiceError):
    """429 (or a run failed with rate_limit_exceeded): back off for ``retry_after`` seconds."""

    def __init__(self, message: str, *, retry_after: float | None = None, **kwargs: object) -> None:
        super().__init__(message, **kwargs)  # type: ignore[arg-type]
        self.retry_after = retry_after


class ServiceError(AgentServiceError):
    """5xx: the service failed; retried already where that was safe."""


class AgentConnectionError(ServiceError):
    """The service could not be reached (DNS, refused, TLS, connect timeout)."""


class BadResponseError(AgentServiceError):
    """The service answered with something that is not the protocol (bad JSON, wrong type)."""


class StreamInterruptedError(AgentServiceError):
    """The event stream broke before ``done``; the run may still be going on the service."""

    def __init__(self, message: str, *, run_id: str | None = None, thread_id: str | None = None) -> None:
        super().__init__(message)
        self.run_id = run_id
        self.thread_id = thread_id


class StreamTimeoutError(StreamInterruptedError):
    """No bytes arrived on the stream for longer than the idle-read timeout."""
