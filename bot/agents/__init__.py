"""The agent side of the bot, behind one seam (``AgentBackend``).

Backends: classic agents (threads and runs, ``classic/``) and new Foundry agents over the
Responses API (``foundry/``). Their modules are private to this package: everything else
uses the names below.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .backend import (
    AgentBackend,
    AgentInfo,
    ApprovalDecision,
    FunctionTool,
    InputFile,
    RunSnapshot,
    RunStatus,
    RunStream,
    ToolOutput,
    TurnContext,
)
from .errors import (
    AgentConnectionError,
    AgentServiceError,
    AuthenticationError,
    BadRequestError,
    BadResponseError,
    ContextTooLongError,
    NotFoundError,
    RateLimitedError,
    StreamInterruptedError,
    ThreadBusyError,
)
from .tools import function_tool, tool_drift

if TYPE_CHECKING:
    from ..settings import Settings

__all__ = [
    "AgentBackend",
    "AgentConnectionError",
    "AgentInfo",
    "AgentServiceError",
    "ApprovalDecision",
    "AuthenticationError",
    "BadRequestError",
    "BadResponseError",
    "ContextTooLongError",
    "FunctionTool",
    "InputFile",
    "NotFoundError",
    "RateLimitedError",
    "RunSnapshot",
    "RunStatus",
    "RunStream",
    "StreamInterruptedError",
    "ThreadBusyError",
    "ToolOutput",
    "TurnContext",
    "function_tool",
    "make_backend",
    "reach_project",
    "tool_drift",
]


async def reach_project(settings: Settings) -> None:
    """Reach the project with the credential, whichever agent (if any) is named: one page of
    its agents. Raises what the service says (``AuthenticationError``, ``NotFoundError``...)."""
    from .classic import AgentsClient

    client = AgentsClient.from_settings(settings)
    try:
        await client.list_agents(1)
    finally:
        await client.aclose()


def make_backend(settings: Settings) -> AgentBackend:
    """The backend the settings choose (``AGENT_BACKEND``, or ``AGENT_NAME`` vs ``AGENT_ID``)."""
    if not settings.project_endpoint:
        raise ValueError("PROJECT_ENDPOINT is not set")
    if settings.backend == "foundry":
        from .auth import token_provider
        from .foundry import FoundryBackend
        from .retry import RetryPolicy

        if not settings.agent_name:
            raise ValueError("AGENT_BACKEND=foundry needs AGENT_NAME (and optionally AGENT_VERSION)")
        return FoundryBackend(
            settings.project_endpoint,
            token_provider(settings.access_token),
            settings.agent_name,
            agent_version=settings.agent_version,
            addressing=settings.agent_addressing,
            api_version=settings.agents_api_version,
            background=settings.agents_background,
            truncation=settings.agents_truncation,
            stream_idle_timeout=settings.agents_stream_idle_timeout,
            connect_timeout=settings.agents_connect_timeout,
            retry=RetryPolicy(
                within_s=settings.agents_retry_seconds, max_attempts=settings.agents_max_attempts
            ),
        )
    from .classic import AgentsClient, ClassicBackend

    if not settings.agent_id:
        raise ValueError("AGENT_BACKEND=classic needs AGENT_ID (asst_...)")
    return ClassicBackend(AgentsClient.from_settings(settings), settings.agent_id)
