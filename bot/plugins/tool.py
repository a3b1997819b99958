"""The ``@tool`` decorator: a typed Python function becomes a function tool for the agent."""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar, overload

from pydantic import BaseModel

from .schema import build_signature, json_schema

F = TypeVar("F", bound=Callable[..., Any])
_NAME = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
DEFAULT_TIMEOUT_S = 30.0


@dataclass
class ToolSpec:
    name: str
    function: Callable[..., Any]
    description: str
    model: type[BaseModel]
    parameters: dict[str, Any]
    context_param: str | None = None
    timeout: float = DEFAULT_TIMEOUT_S
    confirm: bool = False
    admin_only: bool = False
    source: str = field(default="")

    @property
    def is_async(self) -> bool:
        return inspect.iscoroutinefunction(self.function)

    def definition(self) -> dict[str, Any]:
        """The function tool definition the agent service takes."""
        return {
            "type": "function",
            "function": {
                "name": self.name,
                "description": self.description,
                "parameters": self.parameters,
            },
        }

    def one_line(self) -> str:
        """``name(a: integer, b?: string)``: for listings."""
        props = self.parameters.get("properties", {})
        required = set(self.parameters.get("required", []))
        args = ", ".join(
            f"{key}{'' if key in required else '?'}: {_type_name(value)}" for key, value in props.items()
        )
        return f"{self.name}({args})"


def _type_name(schema: dict[str, Any]) -> str:
    if "enum" in schema:
        return "|".join(repr(v) for v in schema["enum"])
    if "anyOf" in schema:
        return "|".join(_type_name(option) for option in schema["anyOf"])
    kind = schema.get("type", "any")
    if kind == "array":
        return f"list[{_type_name(schema.get('items', {}))}]"
    return str(kind)


def make_spec(
    function: Callable[..., Any],
    *,
    name: str | None = None,
    timeout: float = DEFAULT_TIMEOUT_S,
    confirm: bool = False,
    admin_only: bool = False,
) -> ToolSpec:
    tool_name = name or function.__name__
    if not _NAME.match(tool_name):
        raise ValueError(
            f"tool name {tool_name!r} must be 1-64 letters, digits, '_' or '-' (the service's rule)"
        )
    if timeout <= 0:
        raise ValueError(f"tool {tool_name}: timeout must be positive")
    signature = build_signature(function, tool_name)
    description = signature.description or f"The {tool_name} tool."
    return ToolSpec(
        name=tool_name,
        function=function,
        description=description,
        model=signature.model,
        parameters=json_schema(signature.model),
        context_param=signature.context_param,
        timeout=timeout,
        confirm=confirm,
        admin_only=admin_only,
        source=f"{function.__module__}.{function.__qualname__}",
    )


@overload
def tool(function: F) -> F: ...


@overload
def tool(
    *,
    name: str | None = None,
    timeout: float = DEFAULT_TIMEOUT_S,
    confirm: bool = False,
    admin_only: bool = False,
) -> Callable[[F], F]: ...


def tool(
    function: F | None = None,
    *,
    name: str | None = None,
    timeout: float = DEFAULT_TIMEOUT_S,
    confirm: bool = False,
    admin_only: bool = False,
) -> F | Callable[[F], F]:
    """Make a function a tool the agent can call. The function stays callable as it was.

    Options: ``name`` (default: the function's), ``timeout`` seconds (default 30),
    ``confirm`` (the asking user approves each call in Slack), ``admin_only``
    (runs only for BOT_ADMINS).
    """

    def mark(fn: F) -> F:
        fn.__tool__ = make_spec(  # type: ignore[attr-defined]
            fn, name=name, timeout=timeout, confirm=confirm, admin_only=admin_only
        )
        return fn

    return mark(function) if function is not None else mark
