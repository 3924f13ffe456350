"""Realtime function tools: `tools` and `tool_choice` validated, function items parsed, and the
wire events of a function call. No I/O."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from server.client_events import FunctionCallOutputSpec, FunctionCallSpec, FunctionTool, ToolChoiceFunction
from server.conversation import Item
from server.wire import ProtocolError
from voice.llm.base import Tool

ToolChoice = str | dict[str, str]
"""`auto`, `none`, `required`, or `{"type": "function", "name": NAME}`."""


def _fail(message: str, param: str, event_id: str | None, code: str = "invalid_value") -> ProtocolError:
    return ProtocolError(message, code=code, param=param, event_id=event_id)


def parse_tools(specs: list[FunctionTool], param: str, event_id: str | None) -> tuple[Tool, ...]:
    """Function tools, their fields typed by the schema (server/client_events.py), each checked
    further: a valid JSON schema (Draft 2020-12) for an object, no name twice."""
    from jsonschema import Draft202012Validator, SchemaError

    tools: list[Tool] = []
    for k, spec in enumerate(specs):
        where, name, parameters = f"{param}[{k}]", spec.name, spec.parameters
        if any(tool.name == name for tool in tools):
            raise _fail(f"two tools are named {name!r}", f"{where}.name", event_id)
        try:
            json.dumps(parameters, allow_nan=False)  # (NaN, Infinity and 4,000-digit numbers are not JSON)
            Draft202012Validator.check_schema(parameters)
        except SchemaError as exc:
            raise _fail(f"'parameters' of {name!r} is not a valid JSON schema: {exc.message[:200]}",
                        f"{where}.parameters", event_id) from None
        except Exception:  # noqa: BLE001 - whatever else the validator trips on (a schema nested too deep) is refused
            raise _fail(f"'parameters' of {name!r} cannot be checked as a JSON schema", f"{where}.parameters",
                        event_id) from None
        if parameters.get("type", "object") != "object":
            raise _fail(f"'parameters' of {name!r} must describe an object", f"{where}.parameters", event_id)
        tools.append(Tool(name, spec.description, parameters))
    return tuple(tools)


def parse_tool_choice(value: str | ToolChoiceFunction, tools: tuple[Tool, ...], param: str,
                      event_id: str | None) -> ToolChoice:
    """`auto`, `none`, `required`, or a function of `tools` by name."""
    if isinstance(value, str):
        return value
    if not any(tool.name == value.name for tool in tools):
        raise _fail(f"tool_choice names {value.name!r}, which is not one of the tools", f"{param}.name", event_id)
    return {"type": "function", "name": value.name}


def offered(tools: tuple[Tool, ...], choice: ToolChoice) -> tuple[tuple[Tool, ...], bool]:
    """What the model is given: the tools it may call, and whether it must call one of them."""
    if choice == "none" or not tools:
        return (), False
    if isinstance(choice, dict):
        return tuple(tool for tool in tools if tool.name == choice["name"]), True
    return tools, choice == "required"


def tools_to_wire(tools: tuple[Tool, ...]) -> list[dict[str, Any]]:
    return [{"type": "function", "name": t.name, "description": t.description, "parameters": t.parameters}
            for t in tools]


@dataclass(frozen=True)
class FunctionItem:
    """A `function_call` or `function_call_output` item of `conversation.item.create`."""

    type: str
    call_id: str
    item_id: str | None
    name: str = ""
    arguments: str = ""
    output: str = ""


def parse_function_item(spec: FunctionCallSpec | FunctionCallOutputSpec, event_id: str | None,
                        known_call: Any) -> FunctionItem:
    """A function item, typed by the schema: an output must answer a call in the conversation
    (`known_call`: call id -> bool)."""
    if isinstance(spec, FunctionCallOutputSpec):
        if not known_call(spec.call_id):
            raise _fail(f"no function call with call_id {spec.call_id!r} in the conversation", "item.call_id",
                        event_id, code="invalid_call_id")
        return FunctionItem(spec.type, spec.call_id, spec.id, output=spec.output)
    return FunctionItem(spec.type, spec.call_id, spec.id, name=spec.name, arguments=spec.arguments)


def function_item(item_id: str, function: FunctionItem) -> Item:
    """The conversation item of a client's function call or output."""
    if function.type == "function_call":
        return Item(id=item_id, role="assistant", content_type="", type="function_call", call_id=function.call_id,
                    name=function.name, arguments=function.arguments)
    return Item(id=item_id, role="tool", content_type="", type="function_call_output", call_id=function.call_id,
                text=function.output)
