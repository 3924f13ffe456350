"""One INFO line per turn, from the events a session sends: what was heard, what was answered, how fast."""

from __future__ import annotations

import logging
from typing import Any

log = logging.getLogger("server.turns")

_STAGES = ("end_of_turn", "transcript", "llm_first_token", "tts_first_audio", "first_audio_sent")


def _said(output: list[dict[str, Any]]) -> str:
    """The reply's words (audio transcript or text) and calls, from a `response.done`'s output."""
    parts = []
    for item in output:
        if item.get("type") == "function_call":
            parts.append(f"{item.get('name')}({item.get('arguments')})")
        for content in item.get("content") or []:
            parts.append(content.get("transcript") or content.get("text") or "")
    return " ".join(part for part in parts if part)


class TurnLog:
    """Watches one session's outgoing events; logs each finished response with the user item before it.
    Lengths at INFO, the words themselves only at DEBUG: the INFO log carries no conversation content."""

    def __init__(self) -> None:
        self._item: str | None = None  # the newest user item: the one a response answers
        self._heard = ""

    def observe(self, event: dict[str, Any]) -> None:
        kind = event["type"]
        if kind == "conversation.item.added" and event["item"].get("role") == "user":
            item = event["item"]
            self._item = item.get("id")
            self._heard = " ".join(c.get("text") or "" for c in item.get("content") or [] if c.get("text"))
        elif kind == "conversation.item.input_audio_transcription.completed":
            self._item, self._heard = event["item_id"], event["transcript"]
        elif kind == "response.done":
            self._log(event["response"])

    def _log(self, response: dict[str, Any]) -> None:
        said = _said(response.get("output") or [])
        metadata = response.get("metadata") or {}
        stages = " ".join(f"{name}={float(metadata[f'{name}_ms']):.0f}" for name in _STAGES
                          if f"{name}_ms" in metadata)
        details = response.get("status_details") or {}
        reason = details.get("reason") or (details.get("error") or {}).get("code")
        status = f"{response['status']} ({reason})" if reason else response["status"]
        log.info("turn %s -> %s %s: heard %d chars, said %d chars; ms: %s", self._item or "-", response["id"],
                 status, len(self._heard), len(said), stages or "-")
        log.debug("turn %s: heard %r; said %r", self._item or "-", self._heard, said)
