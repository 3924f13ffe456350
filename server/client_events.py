"""The schema of every client event: each field typed, ranged and bounded in length, so that no
malformed value reaches the session. Parsing turns a websocket message into one of these models,
or into a ProtocolError (an `error` event). No I/O."""

from __future__ import annotations

import json
import math
import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, ValidationError

from server.response_wire import SERVER_METADATA_KEYS
from server.wire import ProtocolError

MAX_ID_CHARS = 64  # item, call and response ids (the server's own are 19 characters)
MAX_EVENT_ID_CHARS = 512
MAX_TEXT_CHARS = 262_144  # one text, instructions, function arguments or output (256 Ki characters)
MAX_DESCRIPTION_CHARS = 16_384
MAX_TOOLS = 128
MAX_CONTENT_PARTS = 32
MAX_METADATA_PAIRS = 16  # OpenAI's metadata: 16 pairs, keys of 64 characters, values of 512
MAX_METADATA_KEY_CHARS = 64
MAX_METADATA_VALUE_CHARS = 512

EventId = Annotated[str, Field(max_length=MAX_EVENT_ID_CHARS)]
Id = Annotated[str, Field(min_length=1, max_length=MAX_ID_CHARS)]
Text = Annotated[str, Field(max_length=MAX_TEXT_CHARS)]
Name = Annotated[str, Field(min_length=1, max_length=64)]
Short = Annotated[str, Field(max_length=64)]
Temperature = Annotated[float, Field(ge=0.0, le=2.0, allow_inf_nan=False)]
MaxTokens = Annotated[int, Field(ge=1, le=4096)] | Literal["inf"]
Modalities = Annotated[list[Literal["audio", "text"]], Field(min_length=1, max_length=2)]
Metadata = Annotated[dict[Annotated[str, Field(max_length=MAX_METADATA_KEY_CHARS)],
                          Annotated[str, Field(max_length=MAX_METADATA_VALUE_CHARS)]],
                     Field(max_length=MAX_METADATA_PAIRS)]


class Schema(BaseModel):
    """Strict (no coercion: `"1"` is not a number, `1` is not a boolean) and closed (an unknown
    field is refused, as OpenAI refuses it)."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


# ---------------------------------------------------------------- session.update
class AudioFormat(Schema):
    type: Short = "audio/pcm"  # (an unserved type or rate gets session_update's clear error)
    rate: int | None = None  # audio/pcm: 24000; audio/pcmu and audio/pcma: 8000 (the GA shape leaves it out)


class Transcription(Schema):
    model: Short | None = None
    language: Annotated[str, Field(max_length=16)] | None = None
    prompt: Annotated[str, Field(max_length=4096)] | None = None


class NoiseReduction(Schema):
    type: Literal["near_field", "far_field"]


class RetentionRatio(Schema):
    type: Literal["retention_ratio"]
    retention_ratio: Annotated[float, Field(ge=0.0, le=1.0, allow_inf_nan=False)]


class TurnDetectionSpec(Schema):
    """Both OpenAI kinds in one model: the fields of the other kind are checked and ignored."""

    type: Literal["server_vad", "semantic_vad"] = "server_vad"
    threshold: Annotated[float, Field(ge=0.0, le=1.0, allow_inf_nan=False)] | None = None
    prefix_padding_ms: Annotated[int, Field(ge=0, le=5000)] | None = None
    silence_duration_ms: Annotated[int, Field(ge=0, le=10_000)] | None = None
    idle_timeout_ms: Annotated[int, Field(ge=5000, le=30_000)] | None = None
    eagerness: Literal["low", "medium", "high", "auto"] | None = None
    create_response: bool = True
    interrupt_response: bool = True


class AudioInput(Schema):
    format: AudioFormat | None = None
    transcription: Transcription | None = None
    noise_reduction: NoiseReduction | None = None
    turn_detection: TurnDetectionSpec | None = None


class VoiceId(Schema):
    id: Name


class AudioOutput(Schema):
    format: AudioFormat | None = None
    voice: Name | VoiceId | None = None
    speed: Annotated[float, Field(ge=0.25, le=1.5, allow_inf_nan=False)] | None = None


class SessionAudio(Schema):
    input: AudioInput | None = None
    output: AudioOutput | None = None


class FunctionTool(Schema):
    type: Literal["function"] = "function"
    name: Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")]
    description: Annotated[str, Field(max_length=MAX_DESCRIPTION_CHARS)] = ""
    parameters: dict[str, Any] = Field(default_factory=lambda: {"type": "object", "properties": {}})


class ToolChoiceFunction(Schema):
    type: Literal["function"]
    name: Name


Tools = Annotated[list[FunctionTool], Field(max_length=MAX_TOOLS)]
ToolChoice = Literal["auto", "none", "required"] | ToolChoiceFunction


class SessionSpec(Schema):
    type: Literal["realtime"] = "realtime"
    model: Short | None = None  # accepted: the server serves its own
    instructions: Text | None = None
    output_modalities: Modalities | None = None
    max_output_tokens: MaxTokens | None = None
    temperature: Temperature | None = None
    tools: Tools | None = None
    tool_choice: ToolChoice | None = None
    pipeline: Short | None = None  # an extension: `cascade` or `native`
    audio: SessionAudio | None = None
    include: Annotated[list[Literal["item.input_audio_transcription.logprobs"]], Field(max_length=1)] | None = None
    tracing: Literal["auto"] | None = None  # accepted, not acted on
    truncation: Literal["auto", "disabled"] | RetentionRatio | None = None


class TranscriptionAudio(Schema):
    input: AudioInput | None = None


class TranscriptionSessionSpec(Schema):
    """A transcription session: it transcribes the input audio turn by turn and never replies."""

    type: Literal["transcription"]
    audio: TranscriptionAudio | None = None
    include: Annotated[list[Literal["item.input_audio_transcription.logprobs"]], Field(max_length=1)] | None = None


def _session_kind(value: Any) -> str | None:
    kind = value.get("type", "realtime") if isinstance(value, dict) else getattr(value, "type", None)
    return {"realtime": "Realtime", "transcription": "Transcription"}.get(kind) if isinstance(kind, str) else None


AnySessionSpec = Annotated[
    Annotated[SessionSpec, Tag("Realtime")] | Annotated[TranscriptionSessionSpec, Tag("Transcription")],
    Discriminator(_session_kind, custom_error_type="invalid_value",
                  custom_error_message="session.type must be realtime or transcription"),
]


# ---------------------------------------------------------------- conversation items
class TextPart(Schema):
    type: Literal["input_text", "text", "output_text"]
    text: Text


class ItemFields(Schema):
    """What every conversation item may carry besides its own fields."""

    id: Id | None = None
    object: Literal["realtime.item"] | None = None
    status: Literal["completed", "incomplete", "in_progress"] | None = None


class MessageSpec(ItemFields):
    type: Literal["message"] = "message"
    role: Literal["user", "assistant", "system"]
    content: Annotated[list[TextPart], Field(min_length=1, max_length=MAX_CONTENT_PARTS)]


class FunctionCallSpec(ItemFields):
    type: Literal["function_call"]
    call_id: Id
    name: Name
    arguments: Text = "{}"


class FunctionCallOutputSpec(ItemFields):
    type: Literal["function_call_output"]
    call_id: Id
    output: Text


def _item_kind(value: Any) -> str | None:
    kind = value.get("type", "message") if isinstance(value, dict) else getattr(value, "type", None)
    return {"message": "Message", "function_call": "FunctionCall", "function_call_output": "FunctionCallOutput"
            }.get(kind) if isinstance(kind, str) else None


ItemSpec = Annotated[
    Annotated[MessageSpec, Tag("Message")] | Annotated[FunctionCallSpec, Tag("FunctionCall")]
    | Annotated[FunctionCallOutputSpec, Tag("FunctionCallOutput")],
    Discriminator(_item_kind, custom_error_type="invalid_value",
                  custom_error_message="item.type must be message, function_call or function_call_output"),
]


# ---------------------------------------------------------------- response.create
class ResponseAudioOutput(Schema):
    format: AudioFormat | None = None
    voice: Name | VoiceId | None = None


class ResponseAudio(Schema):
    output: ResponseAudioOutput | None = None


class ResponseSpec(Schema):
    conversation: Literal["auto"] | None = None  # out-of-band responses are not served
    instructions: Text | None = None
    output_modalities: Modalities | None = None
    max_output_tokens: MaxTokens | None = None
    temperature: Temperature | None = None
    tools: Tools | None = None
    tool_choice: ToolChoice | None = None
    metadata: Metadata | None = None
    audio: ResponseAudio | None = None


# ---------------------------------------------------------------- the events
class Event(Schema):
    event_id: EventId | None = None


class SessionUpdate(Event):
    type: Literal["session.update"]
    session: AnySessionSpec


class AudioAppend(Event):
    type: Literal["input_audio_buffer.append"]
    audio: str  # (its size is bounded by the message limit; server.wire decodes it)


class AudioCommit(Event):
    type: Literal["input_audio_buffer.commit"]


class AudioClear(Event):
    type: Literal["input_audio_buffer.clear"]


class ItemCreate(Event):
    type: Literal["conversation.item.create"]
    previous_item_id: Id | None = None
    item: ItemSpec


class ItemTruncate(Event):
    type: Literal["conversation.item.truncate"]
    item_id: Id
    content_index: Annotated[int, Field(ge=0, le=MAX_CONTENT_PARTS)] = 0
    audio_end_ms: Annotated[int, Field(ge=0, le=2**31 - 1)]


class ItemDelete(Event):
    type: Literal["conversation.item.delete"]
    item_id: Id


class ItemRetrieve(Event):
    type: Literal["conversation.item.retrieve"]
    item_id: Id


class ResponseCreate(Event):
    type: Literal["response.create"]
    response: ResponseSpec | None = None


class ResponseCancel(Event):
    type: Literal["response.cancel"]
    response_id: Id | None = None


class OutputAudioClear(Event):
    type: Literal["output_audio_buffer.clear"]


ClientEvent = (SessionUpdate | AudioAppend | AudioCommit | AudioClear | ItemCreate | ItemTruncate | ItemDelete
               | ItemRetrieve | ResponseCreate | ResponseCancel | OutputAudioClear)
_MODELS: dict[str, type[Event]] = {model.model_fields["type"].annotation.__args__[0]: model  # type: ignore[union-attr]
                                   for model in ClientEvent.__args__}  # type: ignore[attr-defined]
CLIENT_EVENT_TYPES = frozenset(_MODELS)


# ---------------------------------------------------------------- parsing
def _integer(digits: str) -> int | float:
    """An integer Python can hold; past 4,000 digits, infinity (int() refuses 4,300), which every
    number field then refuses with its path, as it refuses NaN and Infinity."""
    if len(digits) <= 4000:
        return int(digits)
    return -math.inf if digits.startswith("-") else math.inf


def _load(raw: str | bytes) -> Any:
    if isinstance(raw, bytes):
        raise ProtocolError("binary frames are not accepted: send JSON text events", code="invalid_event")
    try:
        return json.loads(raw, parse_int=_integer)
    except (ValueError, RecursionError) as exc:
        raise ProtocolError(f"the event is not valid JSON: {exc}", code="invalid_json") from None


_SURROGATE = re.compile(r"\\u[dD][89a-fA-F][0-9a-fA-F]{2}")


def _refuse_lone_surrogates(raw: str, payload: Any, event_id: str | None) -> None:
    """A `\\ud800` escaped alone parses into a string no UTF-8 encoder takes (the tokenizer's, the logs'):
    refused. Only a message with such an escape (a pair, or one alone) is checked, so others cost nothing."""
    if _SURROGATE.search(raw):
        try:
            json.dumps(payload, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError:
            raise ProtocolError("the event holds a lone UTF-16 surrogate (\\ud800-\\udfff): not valid text",
                                code="invalid_json", event_id=event_id) from None


def parse_client_event(raw: str | bytes) -> ClientEvent:
    """Parse one websocket message into its event model, or raise ProtocolError."""
    payload = _load(raw)
    if not isinstance(payload, dict):
        raise ProtocolError("an event must be a JSON object", code="invalid_event")
    event_id = payload.get("event_id")
    event_id = event_id if isinstance(event_id, str) and len(event_id) <= MAX_EVENT_ID_CHARS else None
    _refuse_lone_surrogates(raw, payload, event_id)  # type: ignore[arg-type]
    kind = payload.get("type")
    if not isinstance(kind, str):
        raise ProtocolError("the event has no 'type' string", code="missing_type", param="type", event_id=event_id)
    model = _MODELS.get(kind)
    if model is None:
        raise ProtocolError(f"unknown event type {kind[:64]!r}", code="unknown_event_type", param="type",
                            event_id=event_id)
    try:
        event = model.model_validate(payload)
    except ValidationError as exc:
        raise _protocol_error(exc, event_id) from None
    metadata = event.response.metadata if isinstance(event, ResponseCreate) and event.response else None
    reserved = sorted(set(metadata or ()) & SERVER_METADATA_KEYS)
    if reserved:  # the server's own keys: a client may neither write nor spoof its timings
        raise ProtocolError(f"metadata key {reserved[0]!r} is reserved for the server's own metadata",
                            code="invalid_value", param=f"response.metadata.{reserved[0]}", event_id=event_id)
    return event  # type: ignore[return-value]


_CODES = {
    "missing": "missing_required_parameter",
    "extra_forbidden": "unknown_parameter",
    "string_too_long": "string_above_max_length",
    "string_too_short": "string_below_min_length",
    "too_long": "array_above_max_length",
    "too_short": "array_below_min_length",
}
_VALUES = {"literal_error", "invalid_value", "greater_than", "greater_than_equal", "less_than", "less_than_equal",
           "finite_number", "string_pattern_mismatch"}


def _protocol_error(exc: ValidationError, event_id: str | None) -> ProtocolError:
    """The most specific of pydantic's errors (of a union's, the member that went deepest)."""
    errors = exc.errors(include_url=False, include_input=False)
    error = max(errors, key=lambda e: len(e["loc"]))
    kind = error["type"]
    code = _CODES.get(kind) or ("invalid_value" if kind in _VALUES else "invalid_type")
    param = _param(error["loc"])
    return ProtocolError(f"invalid '{param}': {error['msg']}", code=code, param=param, event_id=event_id)


def _param(loc: tuple[int | str, ...]) -> str:
    """`session.tools[0].name`, without pydantic's union members (`str`, `constrained-str`, `literal[...]`,
    class names)."""
    param = ""
    for part in loc:
        if isinstance(part, int):
            param += f"[{part}]"
        elif part and not part[0].isupper() and "[" not in part and "-" not in part \
                and part not in ("str", "int", "float", "bool"):
            param += f".{part}" if param else part
    return param[:200]
