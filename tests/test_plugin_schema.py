"""Schemas the agent sees, generated from many kinds of signatures."""

from __future__ import annotations

import datetime as dt
import enum
from dataclasses import dataclass
from typing import Annotated, Literal

import pytest
from pydantic import BaseModel, Field

from bot.plugins import ToolContext, tool
from bot.plugins.schema import parse_docstring


class Unit(enum.Enum):
    CELSIUS = "celsius"
    FAHRENHEIT = "fahrenheit"


class Address(BaseModel):
    city: str
    country: str = "NL"


class Order(BaseModel):
    items: list[str]
    ship_to: Address


@dataclass
class Window:
    start: dt.date
    days: int = 7


def params(fn: object) -> dict:
    return fn.__tool__.parameters  # type: ignore[attr-defined]


def test_primitives_defaults_and_required() -> None:
    @tool
    def f(a: int, b: float, c: str = "x", d: bool = False) -> str:
        """Doc."""
        return ""

    schema = params(f)
    assert schema["required"] == ["a", "b"]
    assert schema["properties"] == {
        "a": {"type": "integer"},
        "b": {"type": "number"},
        "c": {"default": "x", "type": "string"},
        "d": {"default": False, "type": "boolean"},
    }
    assert schema["additionalProperties"] is False and schema["type"] == "object"


def test_optional_literal_enum_lists() -> None:
    @tool
    def f(
        mode: Literal["fast", "slow"],
        unit: Unit = Unit.CELSIUS,
        tags: list[str] | None = None,
        limit: int | None = None,
    ) -> str:
        """Doc."""
        return ""

    props = params(f)["properties"]
    assert props["mode"] == {"enum": ["fast", "slow"], "type": "string"}
    assert props["unit"] == {"enum": ["celsius", "fahrenheit"], "type": "string", "default": "celsius"}
    assert props["tags"] == {
        "anyOf": [{"items": {"type": "string"}, "type": "array"}, {"type": "null"}],
        "default": None,
    }
    assert props["limit"]["anyOf"] == [{"type": "integer"}, {"type": "null"}]
    assert params(f)["required"] == ["mode"]


def test_nested_models_and_dataclasses_are_inlined() -> None:
    @tool
    def place(order: Order, window: Window) -> str:
        """Place an order."""
        return ""

    schema = params(place)
    assert "$defs" not in str(schema) and "$ref" not in str(schema)
    ship_to = schema["properties"]["order"]["properties"]["ship_to"]
    assert ship_to["properties"]["city"] == {"type": "string"} and ship_to["required"] == ["city"]
    assert schema["properties"]["window"]["properties"]["start"] == {"format": "date", "type": "string"}


def test_descriptions_from_docstring_and_annotated() -> None:
    @tool(name="get-weather")
    def weather(
        ctx: ToolContext,
        city: str,
        days: Annotated[int, Field(ge=1, le=14, description="Days ahead")] = 3,
        title: str = "",
    ) -> str:
        """Get the forecast for a city.

        Use it for weather questions.

        Args:
            city: The city name, e.g. Paris.
                Spelled as locals do.
            days: ignored: Annotated wins.
            title: A parameter called title keeps its name.

        Returns:
            The forecast.
        """
        return ""

    definition = weather.__tool__.definition()  # type: ignore[attr-defined]
    assert definition["function"]["name"] == "get-weather"
    assert (
        definition["function"]["description"]
        == "Get the forecast for a city.\n\nUse it for weather questions."
    )
    props = definition["function"]["parameters"]["properties"]
    assert "ctx" not in props  # ToolContext is injected, never shown
    assert props["city"]["description"] == "The city name, e.g. Paris. Spelled as locals do."
    assert props["days"] == {
        "default": 3,
        "description": "Days ahead",
        "maximum": 14,
        "minimum": 1,
        "type": "integer",
    }
    assert props["title"]["description"] == "A parameter called title keeps its name."
    assert weather.__tool__.context_param == "ctx"  # type: ignore[attr-defined]


def test_sphinx_docstrings_as_in_the_sdk_samples() -> None:
    description, args = parse_docstring("""Fetches weather.

    :param location: The location to fetch weather for.
    :type location: str
    :return: Weather as JSON.
    """)
    assert description == "Fetches weather." and args == {"location": "The location to fetch weather for."}


def test_bad_tools_are_refused_at_definition() -> None:
    with pytest.raises(ValueError, match="must be 1-64 letters"):

        @tool(name="has spaces")
        def f() -> str:
            return ""

    with pytest.raises(TypeError, match=r"\*args and \*\*kwargs"):

        @tool
        def g(*args: int) -> str:
            return ""


def test_the_function_stays_callable() -> None:
    @tool
    def add(a: int, b: int) -> int:
        """Add."""
        return a + b

    assert add(2, 3) == 5
