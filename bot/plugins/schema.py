"""JSON Schema for a tool's parameters, made by pydantic from the function's signature.

Descriptions come from ``Annotated[..., Field(description=...)]`` or the docstring's
``Args:`` section (Google style) or ``:param name:`` lines (Sphinx style, as in the
azure-ai-agents samples). ``$ref``s are inlined so every model endpoint reads the schema.
"""

from __future__ import annotations

import inspect
import re
import typing
from collections.abc import Callable
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, create_model
from pydantic.fields import FieldInfo

from .context import ToolContext

_ARGS_HEADER = re.compile(r"^\s*(Args|Arguments|Parameters)\s*:\s*$")
_SECTION = re.compile(r"^\s*(Returns|Raises|Yields|Examples?|Notes?)\s*:\s*$")
_GOOGLE_ARG = re.compile(r"^\s*(\*{0,2}\w+)\s*(\([^)]*\))?\s*:\s*(.*)$")
_SPHINX_ARG = re.compile(r"^\s*:param\s+(?:[^:]*\s)?(\w+)\s*:\s*(.*)$")


def parse_docstring(doc: str | None) -> tuple[str, dict[str, str]]:
    """(description, {parameter: description})."""
    text = inspect.cleandoc(doc or "")
    summary: list[str] = []
    params: dict[str, str] = {}
    current: str | None = None
    in_args = False
    skipping = False
    for line in text.splitlines():
        sphinx = _SPHINX_ARG.match(line)
        if sphinx:
            current = sphinx.group(1)
            params[current] = sphinx.group(2).strip()
            continue
        if line.strip().startswith(":"):
            current = None
            continue
        if _ARGS_HEADER.match(line):
            in_args, current = True, None
            continue
        if _SECTION.match(line):
            in_args, current, skipping = False, None, True
            continue
        if skipping:
            if not line.strip() or line[:1].isspace():
                continue  # the body of a Returns/Raises/... section
            skipping = False
        if in_args:
            match = _GOOGLE_ARG.match(line)
            indent = len(line) - len(line.lstrip())
            if match and (current is None or indent <= _indent_of_args(text)):
                current = match.group(1).lstrip("*")
                params[current] = match.group(3).strip()
            elif current and line.strip():
                params[current] = f"{params[current]} {line.strip()}".strip()
            continue
        if current and line.strip():  # a continuation of a :param: line
            params[current] = f"{params[current]} {line.strip()}"
            continue
        current = None
        summary.append(line)
    description = "\n".join(summary).strip()
    return re.sub(r"\n{3,}", "\n\n", description), params


def _indent_of_args(text: str) -> int:
    lines = text.splitlines()
    for index, line in enumerate(lines):
        if _ARGS_HEADER.match(line) and index + 1 < len(lines):
            following = lines[index + 1]
            return len(following) - len(following.lstrip())
    return 0


def _is_context(annotation: Any) -> bool:
    if annotation is ToolContext:
        return True
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _is_context(typing.get_args(annotation)[0])
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        return any(arg is ToolContext for arg in typing.get_args(annotation))
    return False


class ToolSignature(typing.NamedTuple):
    model: type[BaseModel]
    context_param: str | None
    description: str


def build_signature(function: Callable[..., Any], name: str) -> ToolSignature:
    """The argument model of a tool, its ToolContext parameter, and its description."""
    description, documented = parse_docstring(function.__doc__)
    hints = typing.get_type_hints(function, include_extras=True)
    fields: dict[str, Any] = {}
    context_param: str | None = None
    for param in inspect.signature(function).parameters.values():
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            raise TypeError(f"tool {name}: *args and **kwargs cannot be described to the agent")
        annotation = hints.get(param.name, Any)
        if _is_context(annotation):
            context_param = param.name
            continue
        default = ... if param.default is inspect.Parameter.empty else param.default
        info = _field_info(annotation)
        if info is not None:
            overrides: dict[str, Any] = {}
            if info.description is None and param.name in documented:
                overrides["description"] = documented[param.name]
            if default is not ...:
                overrides["default"] = default
            merged = FieldInfo.merge_field_infos(info, **overrides)
            fields[param.name] = (_without_field_info(annotation), merged)
        else:
            fields[param.name] = (
                annotation,
                Field(default, description=documented.get(param.name)),
            )
    model = create_model(  # type: ignore[call-overload]
        f"{name}_arguments", __config__=ConfigDict(extra="forbid"), **fields
    )
    return ToolSignature(model, context_param, description)


def _field_info(annotation: Any) -> FieldInfo | None:
    if typing.get_origin(annotation) is typing.Annotated:
        for extra in typing.get_args(annotation)[1:]:
            if isinstance(extra, FieldInfo):
                return extra
    return None


def _without_field_info(annotation: Any) -> Any:
    base, *extras = typing.get_args(annotation)
    kept = [extra for extra in extras if not isinstance(extra, FieldInfo)]
    return typing.Annotated[(base, *kept)] if kept else base  # type: ignore[valid-type]


def json_schema(model: type[BaseModel]) -> dict[str, Any]:
    """The model's JSON Schema with ``$ref``s inlined and pydantic's titles dropped."""
    schema = model.model_json_schema()
    defs = schema.pop("$defs", {})

    def resolve(node: Any, seen: frozenset[str] = frozenset(), names: bool = False) -> Any:
        if isinstance(node, dict):
            if names:  # a "properties" mapping: its keys are parameter names, keep them all
                return {k: resolve(v, seen) for k, v in node.items()}
            ref = node.get("$ref")
            if isinstance(ref, str) and ref.startswith("#/$defs/"):
                key = ref.removeprefix("#/$defs/")
                if key in seen:
                    return {"type": "object"}  # a recursive model: leave it open
                merged = {**defs.get(key, {}), **{k: v for k, v in node.items() if k != "$ref"}}
                return resolve(merged, seen | {key})
            return {
                k: resolve(v, seen, names=(k == "properties"))
                for k, v in node.items()
                if not (k == "title" and isinstance(v, str))
            }
        if isinstance(node, list):
            return [resolve(item, seen) for item in node]
        return node

    resolved = resolve(schema)
    resolved.setdefault("properties", {})
    resolved["additionalProperties"] = False
    return resolved
