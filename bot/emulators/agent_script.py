"""Scripts for the agent emulator's "model": what each run says and does, as data.

A script is a JSON or YAML file::

    turns:                          # each run takes the first unused turn that matches
      - match: weather              # optional: a substring of the latest user message
        reject:                     # optional: refuse the run's creation first, in order
          - {status: 429, retry_after: 0.2}
        actions:
          - {sleep: 1.5}                                      # slow first token
          - {tool_calls: [{name: get_weather, arguments: {city: Paris}}], fragments: 4}
          - {text: "It is ${output} in Paris", deltas: 5, delay: 0.05}
          - {citation: {url: "https://example.com", title: Example}}
          - {file_citation: {file_id: assistant-1, quote: "..."}}
          - {fail: {code: rate_limit_exceeded, message: "Rate limit is exceeded."}}
          - {incomplete: max_completion_tokens}
          - {expire: true}
          - {disconnect: true}                                # drop the socket, run goes on
          - {error_event: {code: server_error, message: "..."}}
          - {raw: "event: thread.message.delta\\ndata: {not json\\n\\n"}
          - {mcp_approval: {server_label: docs, name: search, arguments: {q: x}}}  # new agents
        repeat: false               # true: the turn can be taken again
    delay: 0.02                     # default pause between deltas
    deltas: 4                       # default number of deltas a text is cut into

``${output}`` in a text is the last tool round's outputs joined by newlines;
``${output0}``, ``${output1}``... are the single outputs; an output that is a JSON object
also gives its fields, ``${output_<field>}`` (the first output's) and ``${output<i>_<field>}``,
so a script can quote a tool's result the way a model would, not dump its JSON.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator


def output_substitutions(outputs: list[str]) -> dict[str, str]:
    """``${output}``, ``${output<i>}`` and the fields of JSON-object outputs (see above)."""
    subs = {"output": "\n".join(outputs)}
    for i, out in enumerate(outputs):
        subs[f"output{i}"] = out
        try:
            doc = json.loads(out)
        except ValueError:
            continue
        if isinstance(doc, dict):
            for key, value in doc.items():
                text = value if isinstance(value, str) else json.dumps(value)
                subs[f"output{i}_{key}"] = text
                if i == 0:
                    subs[f"output_{key}"] = text
    return subs


class ScriptError(ValueError):
    """A script file that cannot be used, with the place and the reason."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Reject(_Strict):
    status: int = Field(ge=400, le=599)
    message: str | None = None
    code: str | None = None
    retry_after: float | None = Field(default=None, ge=0)


class ScriptedCall(_Strict):
    name: str
    arguments: dict[str, Any] | str = Field(default_factory=dict)

    def arguments_json(self) -> str:
        return self.arguments if isinstance(self.arguments, str) else json.dumps(self.arguments)


class Citation(_Strict):
    url: str
    title: str = ""


class FileCitation(_Strict):
    file_id: str
    quote: str = ""


class McpApproval(_Strict):
    """An MCP tool call that waits for a person's approval (new agents only)."""

    server_label: str = "mcp"
    name: str
    arguments: dict[str, Any] | str = Field(default_factory=dict)


class RunError(_Strict):
    code: str = "server_error"
    message: str = "Sorry, something went wrong."


class MadeFile(_Strict):
    """A file the agent's code interpreter makes: an image (shown as image output) or a file
    the reply links (classic: ``sandbox:/mnt/data/<name>`` with a ``file_path`` annotation;
    new agents: a container file with a ``container_file_citation``)."""

    name: str
    text: str | None = None  # the content, as text
    base64: str | None = None  # or as base64 (an image)

    def content(self) -> bytes:
        import base64 as b64

        return b64.b64decode(self.base64) if self.base64 else (self.text or "").encode()

    @property
    def image(self) -> bool:
        return self.name.lower().rsplit(".", 1)[-1] in ("png", "jpg", "jpeg", "gif", "webp")


ActionKind = Literal[
    "text", "sleep", "tool_calls", "citation", "file_citation", "fail", "incomplete",
    "expire", "disconnect", "error_event", "raw", "mcp_approval", "file",
]  # fmt: skip


class Action(_Strict):
    """One step of a turn. Exactly one of the action keys is set."""

    text: str | None = None
    deltas: int | None = Field(default=None, ge=1)
    delay: float | None = Field(default=None, ge=0)
    sleep: float | None = Field(default=None, ge=0)
    tool_calls: list[ScriptedCall] | None = None
    fragments: int = Field(default=3, ge=1)
    citation: Citation | None = None
    file_citation: FileCitation | None = None
    fail: RunError | None = None
    incomplete: str | None = None
    expire: bool | None = None
    disconnect: bool | None = None
    error_event: RunError | None = None
    raw: str | None = None
    mcp_approval: McpApproval | None = None
    file: MadeFile | None = None

    @model_validator(mode="after")
    def _one_kind(self) -> Action:
        kinds = [k for k in ActionKind.__args__ if getattr(self, k) is not None]  # type: ignore[attr-defined]
        if len(kinds) != 1:
            found = ", ".join(kinds) or "none"
            raise ValueError(
                f"an action needs exactly one of {', '.join(ActionKind.__args__)}; found {found}"
            )  # type: ignore[attr-defined]
        return self

    @property
    def kind(self) -> str:
        return next(k for k in ActionKind.__args__ if getattr(self, k) is not None)  # type: ignore[attr-defined]


class Turn(_Strict):
    match: str | None = None
    reject: list[Reject] = Field(default_factory=list)
    actions: list[Action] = Field(default_factory=list)
    repeat: bool = False

    def matches(self, user_text: str) -> bool:
        return self.match is None or self.match.lower() in user_text.lower()


class Script(_Strict):
    turns: list[Turn] = Field(default_factory=list)
    delay: float = Field(default=0.02, ge=0)
    deltas: int = Field(default=4, ge=1)

    @classmethod
    def parse(cls, doc: Any, source: str = "script") -> Script:
        if isinstance(doc, list):
            doc = {"turns": doc}
        try:
            return cls.model_validate(doc or {})
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in err['loc']) or '(top)'}: {err['msg']}" for err in exc.errors()
            )
            raise ScriptError(f"{source}: {problems}") from None

    @classmethod
    def load(cls, path: str | Path) -> Script:
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise ScriptError(f"cannot read script {path}: {exc.strerror}") from None
        try:
            doc = json.loads(text) if path.suffix.lower() == ".json" else yaml.safe_load(text)
        except (ValueError, yaml.YAMLError) as exc:
            raise ScriptError(
                f"{path}: not valid {'JSON' if path.suffix == '.json' else 'YAML'}: {exc}"
            ) from None
        return cls.parse(doc, str(path))
