"""WebRTC signalling, as OpenAI's GA calls endpoint: `POST /v1/realtime/calls` with an SDP offer
(`application/sdp`, or `multipart/form-data` with `sdp` and a JSON `session`) is answered with the
server's SDP (201, `Location: /v1/realtime/calls/{call_id}`)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from email.parser import BytesParser
from email.policy import HTTP
from typing import Any

from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription

from server.webrtc_transport import WebRtcTransport


class OfferError(ValueError):
    """A request whose offer (or session) cannot be read: 400."""


@dataclass(frozen=True)
class CallOffer:
    sdp: str
    session: dict[str, Any] | None = None
    """The session configuration sent with the offer, as a `session.update` would carry it."""


def parse_offer(content_type: str, body: bytes) -> CallOffer:
    """The offer of a calls request: raw SDP, or the `sdp` and `session` fields of a form."""
    kind = content_type.split(";", 1)[0].strip().lower()
    if kind == "multipart/form-data":
        fields = _form_fields(content_type, body)
        if "sdp" not in fields:
            raise OfferError("the form has no `sdp` field")
        session = None
        if "session" in fields:
            try:
                session = json.loads(fields["session"])
            except json.JSONDecodeError as exc:
                raise OfferError(f"the `session` field is not JSON: {exc}") from exc
            if not isinstance(session, dict):
                raise OfferError("the `session` field must be a JSON object")
        return CallOffer(_sdp(fields["sdp"]), session)
    if kind in ("application/sdp", "text/plain", ""):
        try:
            return CallOffer(_sdp(body.decode()))
        except UnicodeDecodeError as exc:
            raise OfferError("the offer is not UTF-8") from exc
    raise OfferError(f"unsupported content type {kind!r}: send application/sdp or multipart/form-data")


def _sdp(text: str) -> str:
    if not text.lstrip().startswith("v=0"):
        raise OfferError("the offer is not an SDP session description")
    return text


def _form_fields(content_type: str, body: bytes) -> dict[str, str]:
    """A multipart form's text fields by name (read with the standard library's MIME parser)."""
    message = BytesParser(policy=HTTP).parsebytes(f"Content-Type: {content_type}\r\n\r\n".encode() + body)
    if not message.is_multipart():
        raise OfferError("the form has no parts")
    fields = {}
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        payload = part.get_payload(decode=True)
        if isinstance(name, str) and isinstance(payload, bytes):
            try:
                fields[name] = payload.decode()
            except UnicodeDecodeError as exc:
                raise OfferError(f"the form field {name!r} is not UTF-8") from exc
    return fields


async def answer_offer(sdp: str, peer: str) -> tuple[str, WebRtcTransport]:
    """A peer connection answering `sdp`: the answer's SDP, and the peer as a session's transport."""
    # No STUN server: the server answers with its own addresses only, and calls nothing outside.
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    transport = WebRtcTransport(pc, peer)
    try:
        await pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="offer"))
        pc.addTrack(transport.reply)
        await pc.setLocalDescription(await pc.createAnswer())
    except Exception as exc:
        await transport.close()
        raise OfferError(f"the offer cannot be answered: {exc}") from exc
    return pc.localDescription.sdp, transport
