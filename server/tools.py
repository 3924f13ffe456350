"""Realtime function tools: `tools` and `tool_choice` validated, function items parsed, and the
wire events of a function call. No I/O."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from server.conversation import Item
from server.wire import ClientEvent, ProtocolError, require
from voice.llm.base import Tool

ToolChoice = str | dict[str, str]
"""`auto`, `none`, `required`, or `{"type": "function", "name": NAME}`."""


def _fail(message: str, param: str, event_id: str | None, code: str = "invalid_value") -> ProtocolError:
    return ProtocolError(message, code=code, param=param, event_id=event_id)


def parse_tools(value: Any, param: str, event_id: str | None) -> tuple[Tool, ...]:
    """Function tools (`{type: "function", name, description, parameters}`), each checked: a
    name, a valid JSON schema (Draft 2020-12) for an object, no name twice."""
    from jsonschema import Draft202012Validator, SchemaError

    if not isinstance(value, list):
        raise _fail("'tools' must be a list", param, event_id, code="invalid_type")
    tools: list[Tool] = []
    for k, spec in enumerate(value):
        where = f"{param}[{k}]"
        if not isinstance(spec, dict):
            raise _fail("a tool must be an object", where, event_id, code="invalid_type")
        if spec.get("type", "function") != "function":
            raise _fail(f"unsupported tool type {spec.get('type')!r}: only function tools are served here",
                        f"{where}.type", event_id, code="unsupported")
        name = spec.get("name")
        if not isinstance(name, str) or not name or len(name) > 64 \
                or not all(c.isalnum() or c in "_-" for c in name):
            raise _fail("a function tool needs a 'name' of letters, digits, '_' or '-' (64 at most)",
                        f"{where}.name", event_id)
        if any(tool.name == name for tool in tools):
            raise _fail(f"two tools are named {name!r}", f"{where}.name", event_id)
        description = spec.get("description", "")
        if not isinstance(description, str):
            raise _fail("'description' must be a string", f"{where}.description", event_id, code="invalid_type")
        parameters = spec.get("parameters", {"type": "object", "properties": {}})
        if not isinstance(parameters, dict):
            raise _fail("'parameters' must be a JSON schema object", f"{where}.parameters", event_id,
                        code="invalid_type")
        try:
            Draft202012Validator.check_schema(parameters)
        except SchemaError as exc:
            raise _fail(f"'parameters' of {name!r} is not a valid JSON schema: {exc.message}",
                        f"{where}.parameters", event_id) from None
        if parameters.get("type", "object") != "object":
            raise _fail(f"'parameters' of {name!r} must describe an object", f"{where}.parameters", event_id)
        tools.append(Tool(name, description, parameters))
    return tuple(tools)


def parse_tool_choice(value: Any, tools: tuple[Tool, ...], param: str, event_id: str | None) -> ToolChoice:
    """`auto`, `none`, `required`, or a function of `tools` by name."""
    if value in ("auto", "none", "required"):
        return value
    if isinstance(value, dict) and value.get("type") == "function":
        name = value.get("name")
        if not isinstance(name, str) or not any(tool.name == name for tool in tools):
            raise _fail(f"tool_choice names {name!r}, which is not one of the tools", f"{param}.name", event_id)
        return {"type": "function", "name": name}
    raise _fail("tool_choice must be auto, none, required or {\"type\": \"function\", \"name\": ...}", param,
                event_id)


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


def parse_function_item(event: ClientEvent, known_call: Any) -> FunctionItem:
    """A function item, validated: an output must answer a call in the conversation (`known_call`:
    call id -> bool) and be a string; a call needs a name and arguments that are a JSON string."""
    spec = require(event, "item", dict)
    kind = spec["type"]
    item_id = spec.get("id") if isinstance(spec.get("id"), str) else None
    call_id = spec.get("call_id")
    if not isinstance(call_id, str) or not call_id:
        raise _fail(f"a {kind} item needs a 'call_id' string", "item.call_id", event.event_id)
    if kind == "function_call_output":
        if not known_call(call_id):
            raise _fail(f"no function call with call_id {call_id!r} in the conversation", "item.call_id",
                        event.event_id, code="invalid_call_id")
        output = spec.get("output")
        if not isinstance(output, str):
            raise _fail("a function_call_output's 'output' must be a string (JSON-encode structured results)",
                        "item.output", event.event_id, code="invalid_type")
        return FunctionItem(kind, call_id, item_id, output=output)
    name, arguments = spec.get("name"), spec.get("arguments", "{}")
    if not isinstance(name, str) or not name:
        raise _fail("a function_call item needs a 'name'", "item.name", event.event_id)
    if not isinstance(arguments, str):
        raise _fail("a function_call's 'arguments' must be a JSON string", "item.arguments", event.event_id,
                    code="invalid_type")
    return FunctionItem(kind, call_id, item_id, name=name, arguments=arguments)


def function_item(item_id: str, function: FunctionItem) -> Item:
    """The conversation item of a client's function call or output."""
    if function.type == "function_call":
        return Item(id=item_id, role="assistant", content_type="", type="function_call", call_id=function.call_id,
                    name=function.name, arguments=function.arguments)
    return Item(id=item_id, role="tool", content_type="", type="function_call_output", call_id=function.call_id,
                text=function.output)
