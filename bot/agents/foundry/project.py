"""Named, versioned agents on the project API (``/agents/...?api-version=v1``).

Routes as azure-ai-projects 2.10.0 builds them (``operations/_operations.py``:
``build_agents_get_version_request`` and friends). A pinned version is read directly with
``GET /agents/{name}/versions/{version}``: the version list is paged, so it is never searched.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import httpx

from ..auth import TokenProvider
from ..errors import AgentConnectionError, NotFoundError
from .errors import error_from_status

PROJECT_API_VERSION = "v1"


class AgentVersions:
    def __init__(
        self, endpoint: str, token: TokenProvider, http: httpx.AsyncClient, api_version: str
    ) -> None:
        self.endpoint = endpoint
        self._token = token
        self._http = http
        self.api_version = api_version

    async def _request(self, method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        try:
            response = await self._http.request(
                method,
                f"{self.endpoint}{path}",
                params={"api-version": self.api_version},
                json=body,
                headers={
                    "Authorization": f"Bearer {await self._token.get_token()}",
                    "Accept": "application/json",
                },
            )
        except httpx.HTTPError as exc:
            raise AgentConnectionError(f"cannot reach the agent service: {type(exc).__name__}") from None
        if response.status_code >= 400:
            raise error_from_status(response.status_code, _json(response))
        doc = _json(response)
        return doc if isinstance(doc, dict) else {}

    async def version(self, name: str, version: str | None) -> dict[str, Any]:
        """The pinned version, or the latest when none is pinned."""
        if version:
            return await self._request(
                "GET", f"/agents/{quote(name, safe='')}/versions/{quote(version, safe='')}"
            )
        agent = await self._request("GET", f"/agents/{quote(name, safe='')}")
        latest = (agent.get("versions") or {}).get("latest")
        if not isinstance(latest, dict):
            raise NotFoundError(f"Agent '{name}' has no versions.", status=404)
        return latest

    async def create_version(self, name: str, definition: dict[str, Any]) -> dict[str, Any]:
        return await self._request(
            "POST", f"/agents/{quote(name, safe='')}/versions", {"definition": definition}
        )


def _json(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return {"error": {"message": response.text[:200] or response.reason_phrase}}
