"""Async client for the classic Azure AI Foundry Agent Service (threads/runs) over httpx.

One pooled ``httpx.AsyncClient`` for everything. Plain calls and the *start* of a stream
are retried with backoff and jitter that honours Retry-After; a stream that has yielded
events is never replayed (the caller recovers by polling the run instead).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from typing import Any, Self
from urllib.parse import quote, urlsplit

import httpx

from ...logs import log
from ...settings import Settings
from ..auth import StaticToken, TokenProvider, token_provider
from ..errors import (
    AgentConnectionError,
    AgentServiceError,
    AuthenticationError,
    BadRequestError,
    BadResponseError,
    NotFoundError,
    RateLimitedError,
    ServiceError,
    StreamInterruptedError,
    StreamTimeoutError,
    ThreadBusyError,
)
from ..events import AgentEvent
from ..retry import RETRYABLE_STATUS, RetryPolicy, retry_after_seconds
from ..sse import SSEDecoder, SSEError
from ..uploads import Multipart, Upload
from .handler import AgentEventHandler, FunctionToolSet, dispatch, typed_event_data
from .models import Agent, AgentThread, MessagePage, ThreadMessage, ThreadRun
from .wire import RUN_EVENTS, WireEventMapper

logger = logging.getLogger("bot.agents.classic.client")

RUN_OVERRIDES = frozenset(
    {
        "instructions",
        "additional_instructions",
        "additional_messages",
        "tools",
        "tool_resources",
        "model",
        "temperature",
        "top_p",
        "max_prompt_tokens",
        "max_completion_tokens",
        "truncation_strategy",
        "tool_choice",
        "response_format",
        "parallel_tool_calls",
        "metadata",
    }
)
REST_OF_BODY_S = 1.0  # how long the end of a stream's body may take after `done`

_STREAM_END_STATUSES = frozenset(
    {"completed", "failed", "cancelled", "expired", "incomplete", "requires_action"}
)


def _id(value: str) -> str:
    if not value or not isinstance(value, str):
        raise ValueError(f"expected a non-empty id, got {value!r}")
    return quote(value, safe="")


def _snippet(body: bytes | str, limit: int = 200) -> str:
    text = body.decode("utf-8", "replace") if isinstance(body, bytes) else body
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit] + "…"


class AgentsClient:
    """Talks to one Foundry project endpoint, e.g.
    ``https://<resource>.services.ai.azure.com/api/projects/<project>``."""

    def __init__(
        self,
        endpoint: str,
        token: TokenProvider | str,
        *,
        api_version: str = "v1",
        connect_timeout: float = 10.0,
        stream_idle_timeout: float = 60.0,
        retry: RetryPolicy | None = None,
        max_connections: int = 100,
        http: httpx.AsyncClient | None = None,
    ) -> None:
        parts = urlsplit(endpoint)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError(
                f"PROJECT_ENDPOINT must be an http(s) URL like "
                f"https://<resource>.services.ai.azure.com/api/projects/<project>, got {endpoint!r}"
            )
        self.endpoint = endpoint.rstrip("/")
        self._token: TokenProvider = StaticToken(token) if isinstance(token, str) else token
        self.api_version = api_version
        self.stream_idle_timeout = stream_idle_timeout
        self.retry = retry or RetryPolicy()
        self._owns_http = http is None
        self._http = http or httpx.AsyncClient(
            timeout=httpx.Timeout(connect=connect_timeout, read=stream_idle_timeout, write=30.0, pool=30.0),
            limits=httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections),
            headers={"User-Agent": "slack-agent-bot"},
        )

    @classmethod
    def from_settings(cls, settings: Settings, **kwargs: Any) -> AgentsClient:
        if not settings.project_endpoint:
            raise ValueError("PROJECT_ENDPOINT is not set")
        return cls(
            settings.project_endpoint,
            token_provider(settings.access_token),
            api_version=settings.agents_api_version,
            connect_timeout=settings.agents_connect_timeout,
            stream_idle_timeout=settings.agents_stream_idle_timeout,
            retry=RetryPolicy(
                within_s=settings.agents_retry_seconds, max_attempts=settings.agents_max_attempts
            ),
            **kwargs,
        )

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        if self._owns_http:
            await self._http.aclose()
        await self._token.close()

    # -- agents ----------------------------------------------------------------------

    async def get_agent(self, agent_id: str) -> Agent:
        return Agent.model_validate(await self._json("GET", f"/assistants/{_id(agent_id)}"))

    async def list_agents(self, limit: int = 1) -> list[Agent]:
        """The project's agents (a page): reaching it proves the endpoint and the credential."""
        doc = await self._json("GET", "/assistants", params={"limit": str(limit)})
        return [Agent.model_validate(item) for item in doc.get("data") or []]

    async def create_agent(self, *, model: str, **fields: Any) -> Agent:
        body = {"model": model, **fields}
        return Agent.model_validate(await self._json("POST", "/assistants", body=body))

    async def update_agent(self, agent_id: str, **fields: Any) -> Agent:
        path = f"/assistants/{_id(agent_id)}"
        return Agent.model_validate(await self._json("POST", path, body=fields))

    async def delete_agent(self, agent_id: str) -> bool:
        doc = await self._json("DELETE", f"/assistants/{_id(agent_id)}")
        return bool(doc.get("deleted"))

    # -- threads and messages -------------------------------------------------------

    async def create_thread(
        self,
        *,
        messages: Sequence[dict[str, Any]] | None = None,
        metadata: dict[str, str] | None = None,
    ) -> AgentThread:
        body: dict[str, Any] = {}
        if messages:
            body["messages"] = list(messages)
        if metadata:
            body["metadata"] = metadata
        return AgentThread.model_validate(await self._json("POST", "/threads", body=body))

    async def add_message(
        self,
        thread_id: str,
        content: str | list[dict[str, Any]],
        *,
        role: str = "user",
        attachments: list[dict[str, Any]] | None = None,
        metadata: dict[str, str] | None = None,
    ) -> ThreadMessage:
        body: dict[str, Any] = {"role": role, "content": content}
        if attachments:
            body["attachments"] = attachments
        if metadata:
            body["metadata"] = metadata
        path = f"/threads/{_id(thread_id)}/messages"
        return ThreadMessage.model_validate(await self._json("POST", path, body=body))

    async def list_messages_page(
        self,
        thread_id: str,
        *,
        run_id: str | None = None,
        limit: int = 20,
        order: str = "desc",
        after: str | None = None,
        before: str | None = None,
    ) -> MessagePage:
        params = {
            "limit": str(limit),
            "order": order,
            "run_id": run_id,
            "after": after,
            "before": before,
        }
        path = f"/threads/{_id(thread_id)}/messages"
        doc = await self._json("GET", path, params={k: v for k, v in params.items() if v})
        return MessagePage.model_validate(doc)

    async def list_messages(
        self, thread_id: str, *, run_id: str | None = None, limit: int = 20, order: str = "desc"
    ) -> AsyncIterator[ThreadMessage]:
        """Every message, page by page (``after=<last_id>`` until an empty page)."""
        after: str | None = None
        while True:
            page = await self.list_messages_page(
                thread_id, run_id=run_id, limit=limit, order=order, after=after
            )
            for message in page.data:
                yield message
            if not page.data or not page.last_id or page.last_id == after:
                return
            after = page.last_id

    # -- runs ------------------------------------------------------------------------

    async def stream_run(
        self,
        thread_id: str,
        agent_id: str,
        *,
        event_handler: AgentEventHandler | None = None,
        toolset: FunctionToolSet | None = None,
        max_tool_rounds: int = 10,
        **overrides: Any,
    ) -> RunStream:
        """Create a run with ``stream: true``. With ``toolset``, function calls run
        automatically and the stream continues (the SDK's automatic function calls)."""
        unknown = set(overrides) - RUN_OVERRIDES
        if unknown:
            raise TypeError(f"unknown run override(s): {', '.join(sorted(unknown))}")
        body = {"assistant_id": agent_id, "stream": True, **overrides}
        response = await self._open_stream(f"/threads/{_id(thread_id)}/runs", body)
        return RunStream(
            self,
            response,
            thread_id=thread_id,
            event_handler=event_handler,
            toolset=toolset,
            max_tool_rounds=max_tool_rounds,
        )

    async def submit_tool_outputs_stream(
        self,
        thread_id: str,
        run_id: str,
        tool_outputs: Sequence[dict[str, str]],
        *,
        event_handler: AgentEventHandler | None = None,
        toolset: FunctionToolSet | None = None,
    ) -> RunStream:
        response = await self._open_submit(thread_id, run_id, tool_outputs)
        return RunStream(
            self,
            response,
            thread_id=thread_id,
            run_id=run_id,
            event_handler=event_handler,
            toolset=toolset,
        )

    async def _open_submit(
        self, thread_id: str, run_id: str, tool_outputs: Sequence[dict[str, str]]
    ) -> httpx.Response:
        path = f"/threads/{_id(thread_id)}/runs/{_id(run_id)}/submit_tool_outputs"
        body = {"stream": True, "tool_outputs": list(tool_outputs)}
        return await self._open_stream(path, body)

    async def _open_stream(self, path: str, body: dict[str, Any]) -> httpx.Response:
        """POST and return the open response, once it is known to be an event stream."""
        response = await self._send("POST", path, body=body, stream=True)
        content_type = response.headers.get("content-type", "").split(";")[0].strip()
        if content_type != "text/event-stream":
            raw = await response.aread()
            await response.aclose()
            raise BadResponseError(
                f"expected an event stream from POST {path}, got "
                f"{content_type or 'no content type'}: {_snippet(raw)}",
                status=response.status_code,
            )
        return response

    async def get_run(self, thread_id: str, run_id: str) -> ThreadRun:
        path = f"/threads/{_id(thread_id)}/runs/{_id(run_id)}"
        return ThreadRun.model_validate(await self._json("GET", path))

    async def upload_file(self, upload: Upload, purpose: str = "assistants") -> dict[str, Any]:
        """``POST /files``: the file, streamed from its spool; the service's file object."""
        response = await self._send("POST", "/files", upload=Multipart(upload, purpose))
        try:
            doc = response.json()
        except ValueError:
            raise BadResponseError("malformed JSON from POST /files", status=response.status_code) from None
        if not isinstance(doc, dict) or not doc.get("id"):
            raise BadResponseError("POST /files answered without a file id")
        return doc

    async def delete_thread(self, thread_id: str) -> None:
        await self._json("DELETE", f"/threads/{_id(thread_id)}")

    async def delete_file(self, file_id: str) -> None:
        await self._json("DELETE", f"/files/{_id(file_id)}")

    async def file_content(self, file_id: str) -> AsyncIterator[bytes]:
        """A file's bytes as they arrive (an agent's image or generated file)."""
        response = await self._send("GET", f"/files/{_id(file_id)}/content", stream=True)
        try:
            async for chunk in response.aiter_bytes():
                yield chunk
        except httpx.HTTPError as exc:
            raise StreamInterruptedError(f"the file download broke: {exc or type(exc).__name__}") from None
        finally:
            await response.aclose()

    async def cancel_run(self, thread_id: str, run_id: str) -> ThreadRun:
        path = f"/threads/{_id(thread_id)}/runs/{_id(run_id)}/cancel"
        return ThreadRun.model_validate(await self._json("POST", path))

    # -- transport -------------------------------------------------------------------

    async def _json(
        self,
        method: str,
        path: str,
        *,
        body: dict[str, Any] | None = None,
        params: dict[str, str] | None = None,
    ) -> dict[str, Any]:
        response = await self._send(method, path, body=body, params=params)
        content_type = response.headers.get("content-type", "").split(";")[0].strip()
        if "json" not in content_type:
            raise BadResponseError(
                f"expected JSON from {method} {path}, got {content_type or 'no content type'}: "
                f"{_snippet(response.content)}",
                status=response.status_code,
            )
        try:
            doc = response.json()
        except ValueError as exc:
            raise BadResponseError(
                f"malformed JSON from {method} {path}: {exc}", status=response.status_code
            ) from None
        if not isinstance(doc, dict):
            raise BadResponseError(f"expected a JSON object from {method} {path}")
        return doc

    async def _send(
        self,
        method: str,
        path: str,
        *,
        body: dict[str, Any] | None = None,
        params: dict[str, str] | None = None,
        stream: bool = False,
        upload: Multipart | None = None,
    ) -> httpx.Response:
        """Send with retries. Returns a 2xx response (open, when ``stream``). ``upload``: a
        multipart body, streamed (and produced again for a retry)."""
        url = self.endpoint + path
        query = {"api-version": self.api_version, **(params or {})}
        request_id = str(uuid.uuid4())
        attempt, deadline = 0, self.retry.deadline()
        reauthenticated = False
        while True:
            headers = {
                "Authorization": f"Bearer {await self._token.get_token()}",
                "Accept": "text/event-stream" if stream else "application/json",
                "x-ms-client-request-id": request_id,
            }
            if upload is not None:
                request = self._http.build_request(
                    method, url, params=query, content=upload.body(), headers={**headers, **upload.headers}
                )
            else:
                request = self._http.build_request(method, url, params=query, json=body, headers=headers)
            started = time.monotonic()
            try:
                response = await self._http.send(request, stream=stream)
            except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
                if await self._backoff(method, path, attempt, deadline, None, f"connect error: {exc!r}"):
                    attempt += 1
                    continue
                host = urlsplit(url).netloc
                raise AgentConnectionError(
                    f"cannot reach the agent service at {host}: {exc or type(exc).__name__}"
                ) from None
            except httpx.TimeoutException:
                if method == "GET" and await self._backoff(
                    method, path, attempt, deadline, None, "read timeout"
                ):
                    attempt += 1
                    continue
                raise ServiceError(f"the agent service did not answer {method} {path} in time") from None
            except httpx.HTTPError as exc:
                raise AgentConnectionError(f"{method} {path} failed: {exc or type(exc).__name__}") from None

            status = response.status_code
            log(
                logger,
                "agent.http",
                logging.DEBUG if status < 400 else logging.INFO,
                method=method,
                path=path,
                status=status,
                attempt=attempt,
                ms=round((time.monotonic() - started) * 1000),
                request_id=request_id,
                service_request_id=response.headers.get("apim-request-id")
                or response.headers.get("x-request-id"),
            )
            if status < 400:
                if not stream:
                    await response.aread()
                return response

            raw = await response.aread()
            await response.aclose()
            error = self._error(response, raw)
            if status == 401 and not reauthenticated and self._token.invalidate():
                reauthenticated = True
                continue
            if status in RETRYABLE_STATUS:
                retry_after = retry_after_seconds(response.headers)
                if retry_after is None or retry_after <= self.retry.max_retry_after:
                    if await self._backoff(method, path, attempt, deadline, retry_after, str(error)):
                        attempt += 1
                        continue
            raise error

    async def _backoff(
        self, method: str, path: str, attempt: int, deadline: float, retry_after: float | None, why: str
    ) -> bool:
        """Wait before the next try; False (at once) when it would end past the deadline."""
        delay = self.retry.delay(attempt, retry_after)
        if not self.retry.may_retry(deadline, attempt, delay):
            return False
        log(
            logger,
            "agent.retry",
            logging.WARNING,
            method=method,
            path=path,
            attempt=attempt + 1,
            delay_s=round(delay, 3),
            why=why,
        )
        await asyncio.sleep(delay)
        return True

    @staticmethod
    def _error(response: httpx.Response, raw: bytes) -> AgentServiceError:
        status = response.status_code
        code: str | None = None
        message = ""
        try:
            doc = json.loads(raw)
            inner = doc.get("error", doc) if isinstance(doc, dict) else {}
            if isinstance(inner, dict):
                message = str(inner.get("message") or "")
                code = inner.get("code") or inner.get("type")
                code = str(code) if code is not None else None
        except ValueError:
            pass
        if not message:
            message = _snippet(raw) or response.reason_phrase or "no message"
        kwargs: dict[str, Any] = {
            "status": status,
            "code": code,
            "request_id": response.headers.get("apim-request-id")
            or response.request.headers.get("x-ms-client-request-id"),
        }
        if status in (401, 403):
            return AuthenticationError(message, **kwargs)
        if status == 404:
            return NotFoundError(message, **kwargs)
        if status == 429:
            return RateLimitedError(message, retry_after=retry_after_seconds(response.headers), **kwargs)
        if status == 400 and ThreadBusyError.matches(message):
            return ThreadBusyError(message, **kwargs)
        if status in (400, 409, 413, 415, 422):
            return BadRequestError(message, **kwargs)
        if status >= 500:
            return ServiceError(message, **kwargs)
        return AgentServiceError(message, **kwargs)


class RunStream:
    """One run's event stream, possibly spanning several HTTP responses (tool rounds).

    ``async for event_type, event_data in stream`` gives the SDK's shape; ``events()``
    gives backend-neutral events. Either consumes the stream once.
    """

    def __init__(
        self,
        client: AgentsClient,
        response: httpx.Response,
        *,
        thread_id: str,
        run_id: str | None = None,
        event_handler: AgentEventHandler | None = None,
        toolset: FunctionToolSet | None = None,
        max_tool_rounds: int = 10,
    ) -> None:
        self._client = client
        self._response: httpx.Response | None = response
        self.thread_id = thread_id
        self.run_id = run_id
        self.status: str | None = None
        self.run: dict[str, Any] | None = None  # the last run object the stream carried
        self._handler = event_handler
        self._toolset = toolset
        self._max_tool_rounds = max_tool_rounds
        self._consumed = False

    @property
    def conversation_id(self) -> str:
        return self.thread_id

    @property
    def expires_at(self) -> float | None:
        """The run's own deadline as the service set it (never a constant of ours)."""
        value = (self.run or {}).get("expires_at")
        return float(value) if isinstance(value, (int, float)) and value > 0 else None

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        if self._response is not None:
            await self._response.aclose()
            self._response = None

    async def __aiter__(self) -> AsyncIterator[tuple[str, Any]]:
        async for name, data in self._wire():
            typed = typed_event_data(name, data)
            if self._handler is not None:
                await dispatch(self._handler, name, typed)
            yield name, typed

    async def events(self) -> AsyncIterator[AgentEvent]:
        mapper = WireEventMapper()
        async for name, data in self._wire():
            if self._handler is not None:
                await dispatch(self._handler, name, typed_event_data(name, data))
            for event in mapper.map(name, data):
                yield event

    async def until_done(self) -> None:
        async for _ in self:
            pass

    # -- internals -------------------------------------------------------------------

    async def _wire(self) -> AsyncIterator[tuple[str, Any]]:
        if self._consumed:
            raise RuntimeError("a RunStream can be consumed once")
        self._consumed = True
        rounds = 0
        try:
            while self._response is not None:
                waiting: ThreadRun | None = None
                async for name, data in self._read(self._response):
                    yield name, data
                    if name == "thread.run.requires_action" and self._toolset is not None:
                        waiting = ThreadRun.model_validate(data)
                await self.aclose()
                if waiting is None or not waiting.tool_calls:
                    return
                rounds += 1
                if rounds > self._max_tool_rounds:
                    log(
                        logger,
                        "agent.tool_rounds_exceeded",
                        logging.WARNING,
                        thread_id=self.thread_id,
                        run_id=waiting.id,
                        rounds=rounds - 1,
                    )
                    run = await self._client.cancel_run(waiting.thread_id, waiting.id)
                    self._note_run(run.as_dict())
                    yield "thread.run.cancelled", run.as_dict()
                    return
                outputs = await self._toolset.execute(waiting.tool_calls)  # type: ignore[union-attr]
                self._response = await self._client._open_submit(waiting.thread_id, waiting.id, outputs)
        finally:
            await self.aclose()

    def _note_run(self, run: dict[str, Any]) -> None:
        self.run = run
        self.run_id = run.get("id") or self.run_id
        self.thread_id = run.get("thread_id") or self.thread_id
        self.status = run.get("status") or self.status

    async def _read(self, response: httpx.Response) -> AsyncIterator[tuple[str, Any]]:
        """One HTTP response's events, up to and including ``done``."""
        decoder = SSEDecoder()
        chunks = response.aiter_bytes()
        try:
            async for chunk in chunks:
                for sse in decoder.feed(chunk):
                    name = sse.event
                    if name == "done":
                        yield "done", sse.data
                        await _rest_of_body(chunks)
                        return
                    data = self._parse(name, sse.data)
                    if name in RUN_EVENTS and isinstance(data, dict):
                        self._note_run(data)
                    yield name, data
        except httpx.TimeoutException:
            raise StreamTimeoutError(
                f"the agent service sent nothing for {self._client.stream_idle_timeout:g} s",
                run_id=self.run_id,
                thread_id=self.thread_id,
            ) from None
        except httpx.HTTPError as exc:
            raise StreamInterruptedError(
                f"the event stream broke: {exc or type(exc).__name__}",
                run_id=self.run_id,
                thread_id=self.thread_id,
            ) from None
        except SSEError as exc:
            raise BadResponseError(str(exc)) from None
        if self.status in _STREAM_END_STATUSES:
            log(
                logger,
                "agent.stream_no_done",
                logging.INFO,
                thread_id=self.thread_id,
                run_id=self.run_id,
            )
            return
        raise StreamInterruptedError(
            "the agent service closed the stream before the run finished",
            run_id=self.run_id,
            thread_id=self.thread_id,
        )

    def _parse(self, name: str, data: str) -> Any:
        try:
            return json.loads(data)
        except ValueError:
            if name == "error":
                return data  # some errors arrive as plain text
            raise BadResponseError(f"malformed JSON in {name!r} event: {_snippet(data, 120)}") from None


async def _rest_of_body(chunks: AsyncIterator[bytes]) -> None:
    """Read what follows ``done`` (the end of the body, normally already on its way) so the
    connection goes back to the pool instead of being closed: a new TLS connection to the
    service costs far more than this. A server that holds the stream open past ``done`` is
    cut after ``REST_OF_BODY_S``."""
    try:
        async with asyncio.timeout(REST_OF_BODY_S):
            async for _ in chunks:
                pass
    except (TimeoutError, httpx.HTTPError):
        pass
