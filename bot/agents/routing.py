"""Which agent answers where: a routing file maps workspaces, channels and DMs to agents.

``BOT_ROUTES`` names a YAML file::

    agents:
      support:  {backend: foundry, name: support-agent, version: "3"}
      helpdesk: {backend: classic, id: asst_abc123}
      sales:    {backend: classic, id: asst_def456, endpoint: "https://other.services.ai.azure.com/api/projects/sales"}
    default: helpdesk              # optional: else the AGENT_* settings answer
    routes:
      - {channel: C0SUPPORT, agent: support}
      - {channels: [C0SALES, C0DEALS], agent: sales}
      - {team: T0PARTNER, agent: support}          # every channel of a workspace
      - {dm: true, agent: helpdesk}                 # direct messages (add team: to narrow)

The most specific route wins: a channel in a workspace, then a channel, then DMs in a
workspace, then DMs, then a workspace, then ``default``. Each Slack thread keeps the agent it
started with in its stored conversation reference (``<agent>::<id>``; the AGENT_* default
keeps bare ids, as a store made before routing has them); if a channel is routed elsewhere,
its threads start afresh with the new agent and the old conversations are deleted with the
right agent by the retention clean-up.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from ..settings import Settings
from .backend import AgentBackend

DEFAULT = ""  # the route of the AGENT_* settings
SEPARATOR = "::"
KEY_SHAPE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,39}$")


class RoutesError(ValueError):
    """A routing file that cannot be used, with where and why."""


class AgentSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    backend: Literal["classic", "foundry"] | None = None
    id: str | None = None  # classic: asst_...
    name: str | None = None  # new Foundry agents
    version: str | None = None
    endpoint: str | None = None  # another project; default PROJECT_ENDPOINT

    @model_validator(mode="after")
    def _names_an_agent(self) -> AgentSpec:
        if not self.id and not self.name:
            raise ValueError("name the agent: id (asst_..., classic) or name (new Foundry agents)")
        if self.backend == "classic" and not self.id:
            raise ValueError("a classic agent needs id (asst_...)")
        if self.backend == "foundry" and not self.name:
            raise ValueError("a new Foundry agent needs name")
        return self

    def settings(self, base: Settings) -> Settings:
        """The base settings with this agent in place of the AGENT_* ones."""
        return base.model_copy(
            update={
                "agent_backend": self.backend,
                "agent_id": self.id,
                "agent_name": self.name,
                "agent_version": self.version,
                "project_endpoint": self.endpoint or base.project_endpoint,
            }
        )


class Route(BaseModel):
    model_config = ConfigDict(extra="forbid")

    agent: str
    team: str | None = None
    channel: str | None = None
    channels: list[str] = Field(default_factory=list)
    dm: bool = False

    @model_validator(mode="after")
    def _says_where(self) -> Route:
        if self.channel:
            self.channels = [self.channel, *self.channels]
            self.channel = None
        if not (self.team or self.channels or self.dm):
            raise ValueError("say where: team, channel(s) or dm: true")
        if self.dm and self.channels:
            raise ValueError("a route is either for channels or for DMs (dm: true), not both")
        return self

    def specificity(self, team: str, channel: str) -> int | None:
        """How specific a match this route is for the conversation (None: no match)."""
        if self.team and self.team != team:
            return None
        direct = channel.startswith("D")
        if self.channels:
            return (5 if self.team else 4) if channel in self.channels else None
        if self.dm:
            return (3 if self.team else 2) if direct else None
        return 1  # the workspace, any channel or DM


class RoutesFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    agents: dict[str, AgentSpec]
    default: str | None = None
    routes: list[Route] = Field(default_factory=list)

    @model_validator(mode="after")
    def _refers_to_known_agents(self) -> RoutesFile:
        for key in self.agents:
            if not KEY_SHAPE.match(key):
                raise ValueError(f"agent key {key!r}: lowercase letters, digits, - and _ (at most 40)")
        known = ", ".join(sorted(self.agents)) or "none"
        for route in self.routes:
            if route.agent not in self.agents:
                raise ValueError(f"a route names agent {route.agent!r}, which is not under agents: ({known})")
        if self.default is not None and self.default not in self.agents:
            raise ValueError(f"default {self.default!r} is not under agents: ({known})")
        return self


def load_routes(path: str) -> RoutesFile:
    """Read and check a routing file; every problem is a ``RoutesError`` naming the place."""
    try:
        doc = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise RoutesError(f"BOT_ROUTES {path}: {exc.strerror or exc}") from None
    except yaml.YAMLError as exc:
        raise RoutesError(f"BOT_ROUTES {path} is not valid YAML: {exc}") from None
    try:
        return RoutesFile.model_validate(doc if doc is not None else {})
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in error['loc']) or 'the file'}: "
            + error["msg"].removeprefix("Value error, ")
            for error in exc.errors()[:5]
        )
        raise RoutesError(f"BOT_ROUTES {path}: {problems}") from None


def split_ref(ref: str) -> tuple[str, str]:
    """A stored conversation (or file) reference: (agent key, the service's own id)."""
    key, sep, ident = ref.partition(SEPARATOR)
    return (key, ident) if sep else (DEFAULT, ref)


def make_ref(key: str, ident: str) -> str:
    return ident if key == DEFAULT else f"{key}{SEPARATOR}{ident}"


class AgentRouter:
    """The agents of one deployment and which answers a conversation; backends are made on
    first use and closed together."""

    def __init__(
        self,
        settings: Settings,
        routes: RoutesFile | None,
        make: Callable[[Settings], AgentBackend],
        *,
        default_backend: AgentBackend | None = None,
    ) -> None:
        self.settings = settings
        self.routes = routes
        self._make = make
        self._backends: dict[str, AgentBackend] = {}
        if default_backend is not None:
            self._backends[DEFAULT] = default_backend
        if self.default_key == DEFAULT and not settings.has_agent and default_backend is None:
            raise RoutesError(
                "no default agent: set AGENT_ID / AGENT_NAME, or `default:` in the routing file"
            )

    @classmethod
    def single(cls, settings: Settings, backend: AgentBackend) -> AgentRouter:
        return cls(settings, None, lambda _: backend, default_backend=backend)

    @property
    def routed(self) -> bool:
        return self.routes is not None

    @property
    def default_key(self) -> str:
        return self.routes.default if self.routes is not None and self.routes.default else DEFAULT

    def route(self, team: str, channel: str) -> str:
        """The agent key answering this conversation."""
        if self.routes is None:
            return DEFAULT
        best: tuple[int, str] | None = None
        for route in self.routes.routes:
            score = route.specificity(team, channel)
            if score is not None and (best is None or score > best[0]):
                best = (score, route.agent)
        return best[1] if best else self.default_key

    def keys(self) -> Iterator[str]:
        """Every agent this deployment may use."""
        if self.default_key == DEFAULT:
            yield DEFAULT
        if self.routes is not None:
            yield from self.routes.agents

    def settings_for(self, key: str) -> Settings:
        if key == DEFAULT or self.routes is None:
            return self.settings
        return self.routes.agents[key].settings(self.settings)

    def backend(self, key: str) -> AgentBackend:
        found = self._backends.get(key)
        if found is None:
            if key != DEFAULT and (self.routes is None or key not in self.routes.agents):
                raise RoutesError(f"no agent {key!r} in the routing file (was it removed?)")
            found = self._backends[key] = self._make(self.settings_for(key))
        return found

    def resolve(self, ref: str) -> tuple[AgentBackend, str]:
        """The backend and the service's id of a stored reference."""
        key, ident = split_ref(ref)
        return self.backend(key), ident

    def label(self, key: str) -> str:
        """How people see the agent: its key and what it is."""
        settings = self.settings_for(key)
        what = settings.agent_ref or "?"
        if settings.agent_version:
            what += f" v{settings.agent_version}"
        return what if key == DEFAULT else f"{key} ({what})"

    def describe(self) -> dict[str, Any]:
        return {key or "default": self.label(key) for key in self.keys()}

    async def aclose(self) -> None:
        for backend in self._backends.values():
            await backend.aclose()
        self._backends.clear()
