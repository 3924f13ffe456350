"""Tool calls: run the app's callback for each call the assistant makes, send its output, and ask
for the reply that says the result once the calling response is done and every output is in."""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from clients.python.events import Event, FunctionCall, function_call_output, response_create, typed

log = logging.getLogger(__name__)

ToolCallback = Callable[[FunctionCall], Any | Awaitable[Any]]
"""Given a call, returns its output (a string, or anything JSON can write): a coroutine function,
or a plain function (run in a worker thread, so it never blocks the event loop)."""

Send = Callable[[Event], Awaitable[None]]


class ToolCalls:
    """Answers function calls with `callback`; `follow_up` is the `response` object of the
    `response.create` sent after the outputs (None: a plain one)."""

    def __init__(self, callback: ToolCallback, send: Send, follow_up: dict[str, Any] | None = None) -> None:
        self.callback = callback
        self.send = send
        self.follow_up = follow_up
        self._pending: dict[str, set[asyncio.Task[None]]] = {}  # response id -> its calls under way
        self._done: set[str] = set()  # responses that ended, with calls still running
        self.tasks: set[asyncio.Task[None]] = set()

    def observe(self, event: Event) -> None:
        view = typed(event)
        if isinstance(view, FunctionCall):
            task = asyncio.ensure_future(self._answer(view))
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)
            self._pending.setdefault(view.response_id, set()).add(task)
        elif event.get("type") == "response.done" and event["response"]["id"] in self._pending:
            self._done.add(event["response"]["id"])
            self._maybe_follow_up(event["response"]["id"])

    async def _answer(self, call: FunctionCall) -> None:
        try:
            if inspect.iscoroutinefunction(self.callback):
                output = await self.callback(call)
            else:
                output = await asyncio.to_thread(self.callback, call)
        except Exception as exc:  # noqa: BLE001 - the assistant hears that the tool failed, and says so
            log.warning("tool %s failed: %s", call.name, exc)
            output = {"error": f"{type(exc).__name__}: {exc}"}
        await self._send(function_call_output(call.call_id, output))
        pending = self._pending.get(call.response_id, set())
        pending.discard(asyncio.current_task())  # type: ignore[arg-type]
        self._maybe_follow_up(call.response_id)

    def _maybe_follow_up(self, response_id: str) -> None:
        if response_id in self._done and not self._pending.get(response_id):
            self._done.discard(response_id)
            self._pending.pop(response_id, None)
            task = asyncio.ensure_future(self._send(response_create(**(self.follow_up or {}))))
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)

    async def _send(self, event: Event) -> None:
        try:
            await self.send(event)
        except Exception as exc:  # noqa: BLE001 - the connection dropped: that session and its calls are gone
            log.warning("%s not sent: %s", event["type"], exc)

    def cancel(self) -> None:
        for task in list(self.tasks):
            task.cancel()
