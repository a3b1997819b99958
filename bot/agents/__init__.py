"""Agent backends: classic threads/runs (``azure.py``) and new Foundry agents over the
Responses API (``foundry.py``), both speaking backend-neutral events (``events.py``)."""

from __future__ import annotations

from typing import Any


def make_backend(settings: Any) -> Any:
    """The backend the settings choose (``AGENT_BACKEND``, or ``AGENT_NAME`` vs ``AGENT_ID``)."""
    if not settings.project_endpoint:
        raise ValueError("PROJECT_ENDPOINT is not set")
    if settings.backend == "foundry":
        from .auth import token_provider
        from .foundry import FoundryBackend

        if not settings.agent_name:
            raise ValueError("AGENT_BACKEND=foundry needs AGENT_NAME (and optionally AGENT_VERSION)")
        return FoundryBackend(
            settings.project_endpoint,
            token_provider(settings.access_token),
            settings.agent_name,
            agent_version=settings.agent_version,
            api_version=settings.agents_api_version,
            stream_idle_timeout=settings.agents_stream_idle_timeout,
            connect_timeout=settings.agents_connect_timeout,
            max_retries=max(0, settings.agents_max_attempts - 1),
        )
    from .azure import AgentsClient

    return AgentsClient.from_settings(settings)
