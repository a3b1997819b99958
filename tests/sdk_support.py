"""Running the official azure-ai-agents SDK against the emulator over plain http.

azure-core refuses to send a bearer token to a non-https URL; the documented way around
it for local servers is an authentication policy that clears ``enforce_https``.
"""

from __future__ import annotations

import time
from typing import Any

from azure.core.credentials import AccessToken, AccessTokenInfo
from azure.core.pipeline.policies import AsyncBearerTokenCredentialPolicy

SCOPE = "https://ai.azure.com/.default"


class StaticCredential:
    """An AsyncTokenCredential with a fixed token (what a developer's CLI login provides)."""

    def __init__(self, token: str = "sdk-token") -> None:
        self.token = token

    async def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        return AccessToken(self.token, int(time.time()) + 3600)

    async def get_token_info(self, *scopes: str, options: Any = None) -> AccessTokenInfo:
        return AccessTokenInfo(self.token, int(time.time()) + 3600)

    async def close(self) -> None:
        return None

    async def __aenter__(self) -> StaticCredential:
        return self

    async def __aexit__(self, *exc: object) -> None:
        return None


class HttpAllowedPolicy(AsyncBearerTokenCredentialPolicy):
    async def on_request(self, request: Any) -> None:
        request.context["enforce_https"] = False
        await super().on_request(request)


def sdk_client(endpoint: str, token: str = "sdk-token") -> Any:
    from azure.ai.agents.aio import AgentsClient as SdkAgentsClient

    credential = StaticCredential(token)
    return SdkAgentsClient(endpoint, credential, authentication_policy=HttpAllowedPolicy(credential, SCOPE))
