"""Which Slack calls may be sent again after the connection broke.

``slack_sdk`` retries every call once when the connection drops (its default
``AsyncConnectionErrorRetryHandler``). When the drop came after Slack did the work, a post, a
stream start or an append sent again is a second message, an open empty stream above the
answer, or the same words twice. Here a call is sent again only when Slack cannot have seen
it (the connection never opened) or when sending it twice changes nothing (a read, an edit
to the same text); the writer finds out what became of the others (``ReplyWriter``).
"""

from __future__ import annotations

from aiohttp import ClientConnectorError, ClientOSError, ServerDisconnectedError
from slack_sdk.http_retry.async_handler import AsyncRetryHandler
from slack_sdk.http_retry.handler import RetryState
from slack_sdk.http_retry.request import HttpRequest
from slack_sdk.http_retry.response import HttpResponse

# sent twice, these leave two of something
NOT_REPEATABLE = frozenset(
    {
        "chat.postMessage",
        "chat.postEphemeral",
        "chat.startStream",
        "chat.appendStream",
        "chat.scheduleMessage",
        "files.getUploadURLExternal",
        "files.completeUploadExternal",
        "reactions.add",
    }
)


def method_of(url: str) -> str:
    return url.split("?", 1)[0].rstrip("/").rsplit("/", 1)[-1]


class RepeatSafely(AsyncRetryHandler):
    """One more try after a broken connection, for calls that are safe to repeat."""

    def __init__(self) -> None:
        super().__init__(max_retry_count=1)

    async def _can_retry_async(
        self,
        *,
        state: RetryState,
        request: HttpRequest,
        response: HttpResponse | None = None,
        error: Exception | None = None,
    ) -> bool:
        if isinstance(error, ClientConnectorError):  # never connected: Slack saw nothing
            return True
        if not isinstance(error, (ServerDisconnectedError, ClientOSError)):
            return False
        return method_of(request.url) not in NOT_REPEATABLE


def slack_retry_handlers() -> list[AsyncRetryHandler]:
    return [RepeatSafely()]
