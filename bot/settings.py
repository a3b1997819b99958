"""All settings, from environment variables and an optional ``.env`` file.

The README's settings table lists exactly these fields; keep the two in step.
"""

from __future__ import annotations

import json
from typing import Literal

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class SettingsError(ValueError):
    """Settings that cannot work, explained in a way an operator can act on."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_file=".env", env_file_encoding="utf-8", extra="ignore")

    # Agent service (Azure AI Foundry, classic threads/runs)
    project_endpoint: str | None = Field(default=None, alias="PROJECT_ENDPOINT")
    agent_id: str | None = Field(default=None, alias="AGENT_ID")
    agent_name: str | None = Field(default=None, alias="AGENT_NAME")
    agent_version: str | None = Field(default=None, alias="AGENT_VERSION")
    agent_backend: Literal["classic", "foundry"] | None = Field(default=None, alias="AGENT_BACKEND")
    agents_access_token: SecretStr | None = Field(default=None, alias="AGENTS_ACCESS_TOKEN")
    agents_api_version: str = Field(default="v1", alias="AGENTS_API_VERSION")
    agents_connect_timeout: float = Field(default=10.0, gt=0, alias="AGENTS_CONNECT_TIMEOUT")
    agents_stream_idle_timeout: float = Field(default=60.0, gt=0, alias="AGENTS_STREAM_IDLE_TIMEOUT")
    agents_retry_seconds: float = Field(default=60.0, gt=0, alias="AGENTS_RETRY_SECONDS")
    agents_max_attempts: int | None = Field(default=None, ge=1, alias="AGENTS_MAX_ATTEMPTS")
    # New Foundry agents: GA addressing (project /openai/v1 + agent_reference) unless the
    # agent's own endpoint (preview) is asked for
    agent_addressing: Literal["project", "agent_endpoint"] = Field(
        default="project", alias="AGENT_ADDRESSING"
    )
    agents_background: bool = Field(default=True, alias="AGENTS_BACKGROUND")
    agents_truncation: Literal["disabled", "auto"] = Field(default="disabled", alias="AGENTS_TRUNCATION")

    # Slack
    slack_bot_token: SecretStr | None = Field(default=None, alias="SLACK_BOT_TOKEN")
    slack_app_token: SecretStr | None = Field(default=None, alias="SLACK_APP_TOKEN")
    slack_signing_secret: SecretStr | None = Field(default=None, alias="SLACK_SIGNING_SECRET")
    slack_api_url: str = Field(default="https://slack.com/api/", alias="SLACK_API_URL")
    # Many workspaces (OAuth install) instead of one SLACK_BOT_TOKEN
    slack_client_id: str | None = Field(default=None, alias="SLACK_CLIENT_ID")
    slack_client_secret: SecretStr | None = Field(default=None, alias="SLACK_CLIENT_SECRET")
    slack_redirect_uri: str | None = Field(default=None, alias="SLACK_REDIRECT_URI")
    install_store_url: str = Field(default="sqlite:///./data/installations.db", alias="BOT_INSTALL_STORE_URL")

    # The bot
    store_url: str = Field(default="sqlite:///./data/bot.db", alias="BOT_STORE_URL")
    tools_dir: str = Field(default="./tools", alias="BOT_TOOLS_DIR")
    admins: str = Field(default="", alias="BOT_ADMINS")
    tool_output_limit: int = Field(default=32 * 1024, ge=256, alias="BOT_TOOL_OUTPUT_LIMIT")
    confirm_timeout: float = Field(default=120.0, gt=0, alias="BOT_CONFIRM_TIMEOUT")
    tool_threads: int = Field(default=8, ge=1, le=256, alias="BOT_TOOL_THREADS")
    # read by the built-in lookup_slack_user plugin (tools/user_lookup.py); validated here
    user_lookup_access: Literal["members", "admins", "everyone"] = Field(
        default="members", alias="BOT_USER_LOOKUP_ACCESS"
    )
    allowed_teams: str = Field(default="", alias="BOT_ALLOWED_TEAMS")
    allowed_channels: str = Field(default="", alias="BOT_ALLOWED_CHANNELS")
    allow_mass_mentions: bool = Field(default=False, alias="BOT_ALLOW_MASS_MENTIONS")
    user_runs_per_minute: int = Field(default=10, ge=1, alias="BOT_USER_RUNS_PER_MINUTE")
    channel_runs_per_minute: int = Field(default=40, ge=1, alias="BOT_CHANNEL_RUNS_PER_MINUTE")
    shutdown_grace: float = Field(default=25.0, ge=0, alias="BOT_SHUTDOWN_GRACE")
    metrics_port: int | None = Field(default=None, alias="BOT_METRICS_PORT")
    metrics_host: str = Field(default="127.0.0.1", alias="BOT_METRICS_HOST")
    heartbeat_ttl: float = Field(default=15.0, ge=1, alias="BOT_HEARTBEAT_TTL")
    retention_days: float = Field(default=90.0, gt=0, alias="BOT_RETENTION_DAYS")
    routes: str = Field(default="", alias="BOT_ROUTES")
    shared_slack_budget: bool = Field(default=True, alias="BOT_SHARED_SLACK_BUDGET")
    stream_mode: Literal["auto", "native", "edit"] = Field(default="edit", alias="BOT_STREAM_MODE")
    task_display: Literal["timeline", "plan"] = Field(default="timeline", alias="BOT_TASK_DISPLAY")
    suggested_prompts: str = Field(default="", alias="BOT_SUGGESTED_PROMPTS")
    assistant_greeting: str = Field(default="", alias="BOT_ASSISTANT_GREETING")
    audit_retention_days: float = Field(default=365.0, gt=0, alias="BOT_AUDIT_RETENTION_DAYS")
    audit_log: str = Field(default="", alias="BOT_AUDIT_LOG")
    delivery_deadline_minutes: float = Field(default=15.0, gt=0, alias="BOT_DELIVERY_DEADLINE_MINUTES")
    max_tool_rounds: int = Field(default=10, ge=1, alias="BOT_MAX_TOOL_ROUNDS")
    max_reply_chars: int = Field(default=100_000, ge=1000, alias="BOT_MAX_REPLY_CHARS")
    file_max_mb: float = Field(default=20.0, gt=0, le=512, alias="BOT_FILE_MAX_MB")
    max_files: int = Field(default=10, ge=0, le=100, alias="BOT_MAX_FILES")
    max_turn_minutes: float = Field(default=15.0, gt=0, alias="BOT_MAX_TURN_MINUTES")

    # Traces (OpenTelemetry): exported only when one of these is set
    otel_exporter_otlp_endpoint: str = Field(default="", alias="OTEL_EXPORTER_OTLP_ENDPOINT")
    applicationinsights_connection_string: SecretStr | None = Field(
        default=None, alias="APPLICATIONINSIGHTS_CONNECTION_STRING"
    )
    otel_service_name: str = Field(default="slack-agent-bot", alias="OTEL_SERVICE_NAME")

    # Logging
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(default="INFO", alias="BOT_LOG_LEVEL")
    log_format: Literal["text", "json"] = Field(default="text", alias="BOT_LOG_FORMAT")

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value

    @field_validator("suggested_prompts")
    @classmethod
    def _prompts(cls, value: str) -> str:
        parse_prompts(value)  # a clear error at start-up, not a broken pane later
        return value

    @property
    def prompts(self) -> list[tuple[str, str]]:
        """The assistant pane's suggested prompts as (title, message); empty: the defaults."""
        return parse_prompts(self.suggested_prompts)

    @field_validator("slack_api_url")
    @classmethod
    def _trailing_slash(cls, value: str) -> str:
        return value if value.endswith("/") else value + "/"

    @staticmethod
    def _ids(value: str) -> frozenset[str]:
        return frozenset(part.strip() for part in value.replace(" ", ",").split(",") if part.strip())

    @property
    def admin_ids(self) -> frozenset[str]:
        return self._ids(self.admins)

    @property
    def allowed_team_ids(self) -> frozenset[str]:
        return self._ids(self.allowed_teams)

    @property
    def allowed_channel_ids(self) -> frozenset[str]:
        return self._ids(self.allowed_channels)

    def secret(self, name: str) -> str | None:
        value = getattr(self, name)
        return value.get_secret_value() if value else None

    @property
    def backend(self) -> str:
        """``AGENT_BACKEND``, or: ``AGENT_NAME`` means new Foundry agents, ``AGENT_ID`` classic."""
        if self.agent_backend:
            return self.agent_backend
        return "foundry" if self.agent_name and not self.agent_id else "classic"

    @property
    def agent_ref(self) -> str | None:
        """The agent the bot talks to: an ``asst_...`` id (classic) or an agent name (foundry)."""
        return self.agent_name if self.backend == "foundry" else self.agent_id

    @property
    def has_agent(self) -> bool:
        return bool(self.project_endpoint and self.agent_ref)

    @property
    def multi_workspace(self) -> bool:
        """Installed through OAuth in any number of workspaces (``SLACK_CLIENT_ID`` and
        ``SLACK_CLIENT_SECRET``), rather than one workspace's ``SLACK_BOT_TOKEN``."""
        return bool(self.slack_client_id and self.secret("slack_client_secret"))

    @property
    def has_slack(self) -> bool:
        return bool(self.secret("slack_bot_token")) or self.multi_workspace

    @property
    def access_token(self) -> str | None:
        return self.agents_access_token.get_secret_value() if self.agents_access_token else None


def parse_prompts(raw: str) -> list[tuple[str, str]]:
    """``BOT_SUGGESTED_PROMPTS``: a JSON list of strings or of ``{"title", "message"}`` objects;
    ``{channel}`` stands for the channel the person is looking at."""
    if not raw.strip():
        return []
    try:
        items = json.loads(raw)
    except ValueError as exc:
        raise ValueError(f"BOT_SUGGESTED_PROMPTS is not JSON ({exc}): give a list of prompts") from exc
    if not isinstance(items, list) or not items:
        raise ValueError('BOT_SUGGESTED_PROMPTS must be a JSON list, e.g. ["What can you do?"]')
    prompts = []
    for item in items:
        if isinstance(item, str) and item.strip():
            prompts.append((item.strip(), item.strip()))
        elif (
            isinstance(item, dict)
            and str(item.get("title") or "").strip()
            and str(item.get("message") or "").strip()
        ):
            prompts.append((str(item["title"]).strip(), str(item["message"]).strip()))
        else:
            raise ValueError(
                f"BOT_SUGGESTED_PROMPTS: {item!r} is neither text nor a {{title, message}} object"
            )
    return prompts


def load_settings() -> Settings:
    try:
        return Settings()
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            name = str(err["loc"][0]) if err["loc"] else "settings"
            lines.append(f"{name}: {err['msg']}")
        raise SettingsError("invalid settings:\n  " + "\n  ".join(lines)) from None
