"""The browser client (clients/web/) end to end: `voice serve` on the bundled models, the page it
serves, and a real headless Chromium whose fake microphone plays a real recording.

Also the page's PCM16 / 24 kHz conversion and playback bookkeeping, run as ES modules under Node.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import re
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import soundfile
import soxr
from playwright.async_api import async_playwright

from tests.helpers import DATA, ROOT, pipe, reference, spawn_voice_server, stop, wer
from voice.audio import float_to_pcm16, pcm16_to_float, resample, rms_dbfs

pytestmark = pytest.mark.browser

CHROMIUM = Path(os.environ.get("VOICE_CHROMIUM", "/usr/bin/chromium"))
WEB = ROOT / "clients" / "web"
LAMP = "04_v2j_would_you_please_turn_on_living_room_lamp.wav"
CAPTURE_RATE = 48_000
LEAD_S = 0.5  # silence before the speech in the fake microphone's file
TAIL_S = 15.0  # and after it (Chromium plays the file once, `%noloop`; the pad would cover a repeat too)
BASE_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--use-fake-device-for-media-stream", "--autoplay-policy=no-user-gesture-required",
]
CHROMIUM_FLAGS = [*BASE_FLAGS, "--use-fake-ui-for-media-stream"]  # the microphone prompt says yes
LATENCY_TEXT = re.compile(r"\d+(\.\d+)? (ms|s)")



@pytest.fixture(scope="module")
def fake_microphone(tmp_path_factory) -> Path:
    """The lamp request with silence around it, as the WAV file Chromium's fake microphone plays."""
    samples, rate = soundfile.read(DATA / LAMP, dtype="float32")
    speech = resample(samples, rate, CAPTURE_RATE)
    audio = np.concatenate([np.zeros(int(LEAD_S * CAPTURE_RATE), np.float32), speech,
                            np.zeros(int(TAIL_S * CAPTURE_RATE), np.float32)])
    path = tmp_path_factory.mktemp("fake-microphone") / "lamp-then-silence.wav"
    soundfile.write(path, audio, CAPTURE_RATE, subtype="PCM_16")
    return path


class Frames:
    """The page's websocket traffic, parsed: what it sent and what it received."""

    def __init__(self) -> None:
        self.sent: list[dict] = []
        self.received: list[dict] = []

    def attach(self, websocket) -> None:
        websocket.on("framesent", lambda payload: self.sent.append(json.loads(payload)))
        websocket.on("framereceived", lambda payload: self.received.append(json.loads(payload)))

    def of(self, kind: str, *, sent: bool = False) -> list[dict]:
        return [e for e in (self.sent if sent else self.received) if e.get("type") == kind]


@contextlib.asynccontextmanager
async def chromium_page(url: str | None, flags: list[str]):
    """`url` in a fresh headless Chromium, once its session has started; yields the page, its
    websocket frames and its errors. Without a `url` the page is blank: the test opens it."""
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=str(CHROMIUM), args=flags)
        try:
            page = await browser.new_page(viewport={"width": 1180, "height": 780})
            errors: list[str] = []
            page.on("pageerror", lambda error: errors.append(f"page error: {error}"))
            page.on("console", lambda message: message.type == "error" and errors.append(f"console: {message.text}"))
            frames = Frames()
            page.on("websocket", frames.attach)
            await page.add_init_script(WATCH_SHOWN)
            if url is not None:
                await page.goto(url)
                await page.wait_for_function("window.voice && window.voice.session !== null", timeout=30_000)
                assert await page.locator("#connection").get_attribute("data-state") == "open"
            yield page, frames, errors
        finally:
            await browser.close()


# What the page showed, from its first paint: each connection state and text, and each alert.
WATCH_SHOWN = """(() => {
  const shown = window.shown = { states: [], texts: [], alerts: [] };
  const last = {};
  const note = (key, value) => {
    if (value && value !== last[key]) shown[key].push(last[key] = value);
  };
  new MutationObserver(() => {
    note("states", document.getElementById("connection")?.dataset.state);
    note("texts", document.getElementById("connection-text")?.textContent);
    const alert = document.getElementById("alert");
    if (alert && !alert.hidden) note("alerts", alert.innerText.trim());
    else last.alerts = null;
  }).observe(document, { subtree: true, childList: true, characterData: true, attributes: true,
                         attributeFilter: ["data-state", "hidden"] });
})()"""


@pytest.fixture
async def browser_page(voice_server, fake_microphone):
    """The page at http://127.0.0.1:PORT/ in headless Chromium, connected to its server."""
    flags = [*CHROMIUM_FLAGS, f"--use-file-for-fake-audio-capture={fake_microphone}%noloop"]
    async with chromium_page(f"http://127.0.0.1:{voice_server}/", flags) as opened:
        yield opened


async def until(predicate, timeout: float = 30.0):
    """Poll `predicate` until it returns something truthy."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not (result := predicate()):
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.05)
    return result


WATCH_STATES = """() => {
  window.seenStates = new Set();
  new MutationObserver((changes) => {
    for (const change of changes) window.seenStates.add(`${change.target.className}:${change.target.dataset.state}`);
  }).observe(document.getElementById("turns"), { subtree: true, attributes: true, attributeFilter: ["data-state"] });
}"""


# Text not cut: no wider than its box, at most two lines, inside the window.
SHOWN_IN_FULL = """(selector) => {
  const node = document.querySelector(selector);
  const box = node.getBoundingClientRect();
  const lines = box.height / parseFloat(getComputedStyle(node).lineHeight);
  return node.scrollWidth <= node.clientWidth && node.scrollHeight <= node.clientHeight + 1 && lines < 2.5
    && box.left >= 0 && box.right <= window.innerWidth;
}"""


async def start_microphone_with_the_keyboard(page) -> None:
    await page.locator("#mic").focus()
    await page.keyboard.press("Enter")
    await page.wait_for_function("document.querySelector('#mic').dataset.state === 'on'", timeout=15_000)


async def test_talking_to_the_page(browser_page, artifacts):
    page, frames, errors = browser_page
    await page.evaluate(WATCH_STATES)
    await start_microphone_with_the_keyboard(page)

    # The user's words appear while they speak, then the final transcript.
    final = page.locator('.message.user[data-final="true"] .heard').first
    await final.wait_for(timeout=60_000)
    transcript = await final.inner_text()
    assert wer(reference(LAMP), transcript) <= 0.25, transcript
    assert frames.of("conversation.item.input_audio_transcription.delta")

    # The reply is heard: its audio went through the player, and a felt latency is shown.
    latency = page.locator('.message.assistant [data-testid="latency"]').first
    await latency.wait_for(timeout=90_000)
    assert LATENCY_TEXT.fullmatch(await latency.inner_text())
    assert LATENCY_TEXT.fullmatch(await page.locator("#last-latency-value").inner_text())
    await page.wait_for_selector('.message.assistant[data-state="done"]', timeout=90_000)
    reply_ms = sum(len(base64.b64decode(e["delta"])) for e in frames.of("response.output_audio.delta")) / 48
    stats = await page.evaluate("window.voice.stats")
    assert stats["playedMs"] >= 0.95 * reply_ms > 300, (stats, reply_ms)
    spoken = frames.of("response.output_audio_transcript.done")[0]["transcript"]
    assert (await page.locator(".message.assistant .heard").first.inner_text()).strip() == spoken

    # The server's stage timings are shown with the turn.
    for stage in ("end_of_turn_ms", "transcript_ms", "llm_first_token_ms", "tts_first_audio_ms", "first_audio_sent_ms"):
        shown = await page.locator(f'.stage[data-stage="{stage}"] dd').first.inner_text()
        assert LATENCY_TEXT.fullmatch(shown), (stage, shown)

    # What the page sent: PCM16 at 24 kHz in 20 ms chunks.
    appends = frames.of("input_audio_buffer.append", sent=True)
    assert len(appends) > 100
    assert {len(base64.b64decode(e["audio"])) for e in appends} == {960}
    assert await page.locator("#alert").is_hidden()
    assert frames.of("response.done")[0]["response"]["status"] == "completed"
    assert not frames.of("error")
    # The partial transcript was shown as it grew, and the reply's text as it was spoken.
    seen = set(await page.evaluate("[...window.seenStates]"))
    assert {"message user:partial", "message user:final", "message assistant:speaking"} <= seen, seen

    await page.screenshot(path=str(artifacts / "browser.png"))
    await page.set_viewport_size({"width": 390, "height": 844})
    await page.screenshot(path=str(artifacts / "browser-phone.png"))

    # M mutes: the stream goes on, in silence, and the status says so in full, on a phone as on a desk.
    await page.locator("#mic").focus()
    await page.keyboard.press("m")
    assert await page.locator("#mute").get_attribute("aria-pressed") == "true"
    assert await page.locator("#mic-status").inner_text() == "Muted: the assistant cannot hear you"
    assert await page.evaluate(SHOWN_IN_FULL, "#mic-status")
    await page.set_viewport_size({"width": 1180, "height": 780})
    assert await page.evaluate(SHOWN_IN_FULL, "#mic-status")
    muted_from = len(frames.sent)
    await page.wait_for_timeout(300)
    muted = [e for e in frames.sent[muted_from + 5:] if e["type"] == "input_audio_buffer.append"]
    assert muted and not any(base64.b64decode(e["audio"]).strip(b"\0") for e in muted)
    await page.locator("#mic").click()  # stop
    assert await page.locator("#mic").get_attribute("data-state") == "off"
    assert errors == []


async def test_typed_message_and_instructions(browser_page):
    page, frames, errors = browser_page
    await page.locator("#open-settings").click()
    assert await page.locator("#settings").is_visible()
    # The server offers both pipelines: the control shows them and switches the session for real.
    assert await page.locator("#pipeline-field").is_visible()
    assert await page.locator("#pipeline option").all_inner_texts() == ["Cascade", "Native"]
    assert await page.locator("#pipeline").input_value() == "cascade"
    await page.locator("#pipeline").select_option("native")
    await page.locator("#apply-settings").click()
    sent = await until(lambda: [e for e in frames.of("session.update", sent=True) if "pipeline" in e["session"]])
    assert sent[0]["session"] == {"type": "realtime", "pipeline": "native"}
    await page.wait_for_function("window.voice.session.pipeline === 'native'")  # the server's answer
    await page.locator("#open-settings").click()
    await page.locator("#pipeline").select_option("cascade")
    await page.locator("#apply-settings").click()
    await page.wait_for_function("window.voice.session.pipeline === 'cascade'")
    voices = await page.evaluate("window.voice.session.voices")
    await page.locator("#open-settings").click()
    assert await page.locator("#voice-field").is_visible() == (len(voices) > 1)
    await page.keyboard.press("Escape")
    if len(voices) > 1:  # the server's voices, offered by their ids; a choice switches the session's voice
        await page.locator("#open-settings").click()
        assert await page.locator("#voice option").all_inner_texts() == voices
        assert await page.locator("#voice").input_value() == voices[0]  # alloy, the default, speaks with it
        await page.locator("#voice").select_option(voices[1])
        await page.locator("#apply-settings").click()
        sent = await until(lambda: [e for e in frames.of("session.update", sent=True) if "audio" in e["session"]])
        assert sent[0]["session"] == {"type": "realtime", "audio": {"output": {"voice": voices[1]}}}
        await page.wait_for_function(f"window.voice.session.audio.output.voice === {voices[1]!r}")
        await page.locator("#open-settings").click()
        await page.locator("#voice").select_option(voices[0])
        await page.locator("#apply-settings").click()
        await page.wait_for_function(f"window.voice.session.audio.output.voice === {voices[0]!r}")
    await page.evaluate("localStorage.clear()")
    await page.locator("#open-settings").click()
    instructions = "You are a cheerful assistant. Always answer in one short sentence."
    await page.locator("#instructions").fill(instructions)
    await page.locator("#apply-settings").click()
    await page.wait_for_function("(text) => window.voice.session.instructions === text", arg=instructions)
    sent = await until(lambda: [e for e in frames.of("session.update", sent=True) if "instructions" in e["session"]])
    assert sent[-1]["session"] == {"type": "realtime", "instructions": instructions}

    await page.locator("#composer-input").fill("What is the capital of France?")
    await page.keyboard.press("Enter")
    await page.wait_for_selector('.message.assistant[data-state="done"]', timeout=90_000)
    sent = frames.of("conversation.item.create", sent=True)
    assert sent[0]["item"]["content"] == [{"type": "input_text", "text": "What is the capital of France?"}]
    assert frames.of("response.create", sent=True)
    assert await page.locator(".message.user .heard").first.inner_text() == "What is the capital of France?"
    assert (await page.locator(".message.assistant .heard").first.inner_text()).strip()
    latency = page.locator('.message.assistant [data-testid="latency"]').first
    assert LATENCY_TEXT.fullmatch(await latency.inner_text())
    assert "sending your message" in await page.locator(".message.assistant .felt-label").first.inner_text()
    assert errors == []


async def test_barge_in_stops_playback_and_truncates_to_what_was_played(browser_page):
    page, frames, errors = browser_page
    await page.evaluate("""() => window.voice.send({type: "session.update", session: {type: "realtime",
        temperature: 0, instructions: "You are a storyteller who tells long, detailed stories."}})""")
    await page.wait_for_function("window.voice.session.instructions.startsWith('You are a storyteller')")
    await page.locator("#composer-input").fill("Tell me a long story about a brave dragon.")
    await page.keyboard.press("Enter")
    await page.wait_for_selector('.message.assistant[data-state="speaking"]', timeout=90_000)
    item_id = await page.locator(".message.assistant").first.get_attribute("data-item-id")
    await page.wait_for_function("(item) => window.voice.player.playedMs(item) > 1000", arg=item_id, timeout=30_000)

    # The user talks over the reply: the fake microphone's recording starts LEAD_S in.
    await page.locator("#mic").click()
    await page.wait_for_selector('.message.assistant[data-state="interrupted"]', timeout=30_000)
    assert await page.evaluate("window.voice.player.speaking") is False  # stopped at once

    truncates = await until(lambda: frames.of("conversation.item.truncate", sent=True))
    assert len(truncates) == 1
    truncate = truncates[0]
    assert truncate["item_id"] == item_id and truncate["content_index"] == 0
    received_ms = sum(len(base64.b64decode(e["delta"])) for e in frames.of("response.output_audio.delta")
                      if e["item_id"] == item_id) / 48
    assert 1000 < truncate["audio_end_ms"] <= received_ms
    truncated = await until(lambda: frames.of("conversation.item.truncated"))
    assert truncated[0]["item_id"] == item_id and truncated[0]["audio_end_ms"] == truncate["audio_end_ms"]
    assert "interrupted after" in await page.locator(".message.assistant .who").first.inner_text()

    # The interruption is itself answered.
    final = page.locator('.message.user[data-final="true"] .heard').last
    await page.wait_for_function(
        "document.querySelectorAll('.message.user[data-final=\"true\"]').length >= 2", timeout=60_000)
    assert wer(reference(LAMP), await final.inner_text()) <= 0.25
    assert not frames.of("error")
    assert errors == []


GAPLESS_CHECK = """async () => {
  const { Player } = await import("/player.js");
  const { floatToPcm16, pcm16ToBytes, pcm16BytesToFloat } = await import("/pcm.js");
  const rate = 24000;
  const ctx = new OfflineAudioContext(1, rate * 2, rate);
  const player = new Player({ context: ctx });
  await player.start();
  // 1.2 s of a sweep, as the server would send it: PCM16 deltas of uneven sizes.
  const speech = Float32Array.from({ length: rate * 1.2 },
    (_, i) => 0.5 * Math.sin(2 * Math.PI * (200 + i / 40) * i / rate));
  const bytes = pcm16ToBytes(floatToPcm16(speech));
  const sizes = [9600, 4800, 2, 9598, 14400, 480];
  const starts = [];
  for (let at = 0, k = 0; at < bytes.length; at += sizes[k++ % sizes.length]) {
    starts.push(player.enqueue("item_1", bytes.subarray(at, at + sizes[k % sizes.length])).start);
  }
  const expected = pcm16BytesToFloat(bytes);
  const out = (await ctx.startRendering()).getChannelData(0);
  const offset = Math.round(starts[0] * rate);
  let maxError = 0;
  for (let i = 0; i < expected.length; i++) maxError = Math.max(maxError, Math.abs(out[offset + i] - expected[i]));
  let before = 0;
  for (let i = 0; i < offset; i++) before = Math.max(before, Math.abs(out[i]));
  const after = Math.max(...out.subarray(offset + expected.length).map(Math.abs));
  return { chunks: starts.length, offset, maxError, before, after,
           scheduledMs: player.timeline.scheduledSamples("item_1") / 24 };
}"""


async def test_the_playback_queue_is_gap_free(browser_page):
    """The player's chunks, rendered by Chromium's own Web Audio engine, join sample for sample."""
    page, frames, errors = browser_page
    result = await page.evaluate(GAPLESS_CHECK)
    assert result["chunks"] > 6 and result["scheduledMs"] == 1200
    assert result["maxError"] == 0, result  # every sample in place: no gap, no overlap, no click
    assert result["before"] == 0 and result["after"] == 0, result
    assert errors == []


class DroppableProxy:
    """A TCP relay in front of the voice server that the test can cut, as a network failure would."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = 0
        self.server: asyncio.Server | None = None
        self.transports: set[asyncio.BaseTransport] = set()

    async def open(self) -> None:
        self.server = await asyncio.start_server(self._relay, "127.0.0.1", self.port)
        self.port = self.server.sockets[0].getsockname()[1]

    async def cut(self) -> None:
        """Refuse new connections and drop the open ones."""
        assert self.server is not None
        self.server.close()
        for transport in list(self.transports):
            transport.abort()
        await self.server.wait_closed()

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            writer.close()
            return
        links = {writer.transport, upstream_writer.transport}
        self.transports |= links

        await asyncio.gather(pipe(reader, upstream_writer), pipe(upstream_reader, writer))
        self.transports -= links


async def test_reconnects_after_a_dropped_connection_and_shows_errors_in_words(voice_server):
    proxy = DroppableProxy(voice_server)
    await proxy.open()
    async with chromium_page(f"http://127.0.0.1:{proxy.port}/", CHROMIUM_FLAGS) as (page, frames, errors):
        alert = page.locator("#alert")
        # A server error event is shown in words.
        await page.evaluate("""() => window.voice.send({type: "conversation.item.truncate",
            item_id: "item_missing", content_index: 0, audio_end_ms: 0})""")
        await alert.wait_for(state="visible")
        text = await alert.inner_text()
        assert "The server reported an error" in text and "item_missing" in text, text
        await page.locator("#alert-close").click()
        assert await alert.is_hidden()

        instructions = "You are a patient tutor. Answer briefly."
        await page.locator("#open-settings").click()
        await page.locator("#instructions").fill(instructions)
        await page.locator("#apply-settings").click()
        await page.wait_for_function("(text) => window.voice.session.instructions === text", arg=instructions)
        first_session = await page.evaluate("window.voice.session.id")

        # The network drops: the page says so, and keeps trying with a growing delay.
        await proxy.cut()
        await page.wait_for_function("window.voice.connection.state === 'waiting'", timeout=10_000)
        assert "Lost the connection to the voice server" in await alert.inner_text()
        assert "Offline" in await page.locator("#connection-text").inner_text()
        await page.wait_for_function(
            "window.voice.connectionLog.filter((e) => e.state === 'waiting').length >= 2", timeout=10_000)
        await proxy.open()  # the same port again
        await page.wait_for_function(
            "(id) => window.voice.connection.state === 'open' && window.voice.session.id !== id",
            arg=first_session, timeout=30_000)
        delays = [e["retryInMs"] for e in await page.evaluate("window.voice.connectionLog") if e["state"] == "waiting"]
        assert len(delays) >= 2 and all(b > a for a, b in zip(delays, delays[1:], strict=False)), delays
        assert await alert.is_hidden()
        assert await page.locator("#connection-text").inner_text() == "Connected"
        # The new session gets the instructions chosen before the drop.
        await page.wait_for_function("(text) => window.voice.session.instructions === text", arg=instructions)
        # (Chromium logs each refused attempt; nothing else went wrong.)
        assert all(re.match(r"console: WebSocket connection to .* failed", e) for e in errors), errors
    await proxy.cut()


async def test_esc_in_the_message_box_and_a_new_message_stop_a_reply_without_a_false_error(browser_page):
    page, frames, errors = browser_page
    await page.evaluate("""() => window.voice.send({type: "session.update", session: {type: "realtime",
        temperature: 0, instructions: "You are a storyteller who tells long, detailed stories."}})""")
    await page.wait_for_function("window.voice.session.instructions.startsWith('You are a storyteller')")
    box = page.locator("#composer-input")
    await box.fill("Tell me a long story about a brave dragon.")
    await box.press("Enter")
    speaking = page.locator('.message.assistant[data-state="speaking"]')
    await speaking.wait_for(timeout=90_000)
    first = await speaking.get_attribute("data-item-id")
    await page.wait_for_function("(item) => window.voice.player.playedMs(item) > 500", arg=first, timeout=30_000)

    # A new message while the reply speaks: the reply stops, and the new message is answered.
    await box.fill("Now tell me a long story about a clever fox.")
    await box.press("Enter")
    await page.locator(f'.message.assistant[data-item-id="{first}"][data-state="interrupted"]').wait_for()
    await speaking.wait_for(timeout=90_000)
    second = await speaking.get_attribute("data-item-id")
    await page.wait_for_function("(item) => window.voice.player.playedMs(item) > 500", arg=second, timeout=30_000)

    # Esc stops it, with the focus still in the message box.
    assert await page.evaluate("document.activeElement.id") == "composer-input"
    await page.keyboard.press("Escape")
    await page.locator(f'.message.assistant[data-item-id="{second}"][data-state="interrupted"]').wait_for()
    assert await page.evaluate("window.voice.player.speaking") is False
    assert [e["item_id"] for e in frames.of("conversation.item.truncate", sent=True)] == [first, second]
    # Each reply the page cancelled has ended; none of it was shown as an error.
    cancelled = {e["response_id"] for e in frames.of("response.cancel", sent=True)}
    await until(lambda: cancelled <= {e["response"]["id"] for e in frames.of("response.done")})
    assert {e["error"].get("code") for e in frames.of("error")} <= {"response_cancel_not_active"}

    # The race itself, made certain: Esc while the page still takes for running a reply the server
    # has finished. The server answers response_cancel_not_active; the page shows nothing.
    done = frames.of("response.done")[0]["response"]["id"]
    await page.evaluate("(id) => { window.voice.activeResponseId = id; }", done)
    await page.keyboard.press("Escape")
    await until(lambda: [e for e in frames.of("error") if e["error"].get("code") == "response_cancel_not_active"])
    await page.evaluate("""() => window.voice.send({type: "session.update", session: {type: "realtime",
        instructions: "You are brief."}})""")  # its answer comes after the error's, in order
    await page.wait_for_function("window.voice.session.instructions === 'You are brief.'")
    assert await page.locator("#alert").is_hidden()
    assert await page.evaluate("window.shown.alerts") == []
    assert errors == []


async def test_the_focused_message_box_has_one_rounded_focus_ring(browser_page):
    page, frames, errors = browser_page
    await page.locator("#composer-input").focus()
    rings = await page.evaluate("""() => {
      const input = document.getElementById("composer-input");
      return { focusVisible: input.matches(":focus-visible"), input: getComputedStyle(input).boxShadow,
               box: getComputedStyle(input.closest(".composer")).boxShadow };
    }""")
    assert rings["focusVisible"] and rings["input"] == "none" and rings["box"] != "none", rings


QUESTION = "What is the capital of France?"


def wait_for_the_models_loading(port: int, process: subprocess.Popen) -> None:
    """Until the server listens and says it is still loading its models (/healthz 503)."""
    deadline = time.monotonic() + 60
    while process.poll() is None and time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2):
                raise AssertionError("the models were loaded before the test could look")
        except urllib.error.HTTPError as refused:
            assert refused.code == 503
            return
        except urllib.error.URLError:
            time.sleep(0.02)  # not listening yet
    raise RuntimeError(f"the server did not listen (exit code {process.returncode})")


async def test_a_page_opened_while_the_server_starts_waits_calmly_and_sends_what_was_typed(artifacts):
    """The real server, opened while it loads its models: it refuses each attempt until it is ready."""
    async with chromium_page(None, CHROMIUM_FLAGS) as (page, frames, errors):
        process, port = spawn_voice_server(log_path=artifacts / "voice-server-starting.log")
        try:
            await asyncio.to_thread(wait_for_the_models_loading, port, process)
            await page.goto(f"http://127.0.0.1:{port}/")
            await page.wait_for_function("document.getElementById('connection').dataset.state === 'starting'")
            assert await page.locator("#connection-text").inner_text() == "Starting up…"
            assert await page.locator("#retry").is_hidden()

            # A message typed now waits, marked as not sent yet, and goes once the session starts.
            await page.locator("#composer-input").fill(QUESTION)
            await page.keyboard.press("Enter")
            assert await page.locator('.message.user[data-unsent="true"]').count() == 1
            assert "not sent yet" in await page.locator(".message.user .who").inner_text()
            assert not frames.of("conversation.item.create", sent=True)
            await page.wait_for_function("window.voice.session !== null", timeout=120_000)
            await page.wait_for_selector('.message.assistant[data-state="done"]', timeout=90_000)
            sent = frames.of("conversation.item.create", sent=True)
            assert [e["item"]["content"][0]["text"] for e in sent] == [QUESTION]
            assert await page.locator(".message.user").count() == 1
            assert await page.locator(".message.user[data-unsent]").count() == 0

            # One calm state until the session: no flap between Connected and Offline, no alarm.
            shown = await page.evaluate("window.shown")
            assert shown["states"] == ["connecting", "starting", "open"], shown
            assert shown["texts"] == ["Connecting…", "Starting up…", "Connected"], shown
            assert shown["alerts"] == [], shown
            refusals = frames.of("error")
            assert refusals and {e["error"]["code"] for e in refusals} == {"models_loading"}
            # Backing off between attempts: the delays grow (to 2 s while the server starts).
            log = await page.evaluate("window.voice.connectionLog")
            waits = [e for e in log if e["state"] == "waiting"]
            assert len(waits) == len(refusals) and {e["refusal"] for e in waits} == {"models_loading"}
            assert all(e["retryInMs"] >= 0.8 * min(2000, 500 * 2**i) for i, e in enumerate(waits)), waits
            assert [e["state"] for e in log].count("open") == 1
            assert errors == []
        finally:
            stop(process)


async def test_a_message_typed_offline_is_marked_unsent_then_sent_on_reconnection(voice_server):
    proxy = DroppableProxy(voice_server)
    await proxy.open()
    async with chromium_page(f"http://127.0.0.1:{proxy.port}/", CHROMIUM_FLAGS) as (page, frames, errors):
        await proxy.cut()
        await page.wait_for_function("window.voice.connection.state === 'waiting'", timeout=10_000)
        await page.locator("#composer-input").fill(QUESTION)
        await page.keyboard.press("Enter")
        unsent = page.locator('.message.user[data-unsent="true"]')
        assert await unsent.count() == 1
        assert await page.locator("#composer-input").input_value() == ""
        assert "not sent yet" in await page.locator(".message.user .who").inner_text()
        assert not frames.of("conversation.item.create", sent=True)

        await proxy.open()
        await page.locator("#retry").click()
        await page.wait_for_function("window.voice.sessions === 2", timeout=30_000)
        await page.wait_for_selector('.message.assistant[data-state="done"]', timeout=90_000)
        sent = frames.of("conversation.item.create", sent=True)
        assert [e["item"]["content"][0]["text"] for e in sent] == [QUESTION]
        assert await unsent.count() == 0 and await page.locator(".message.user").count() == 1
        # It belongs to the new conversation: after the divider that begins it.
        order = await page.evaluate("[...document.querySelectorAll('#turns > li')].map((li) => li.className)")
        assert order[:2] == ["divider", "message user"], order
        assert (await page.locator(".message.assistant .heard").first.inner_text()).strip()
        assert all(re.match(r"console: WebSocket connection to .* failed", e) for e in errors), errors
    await proxy.cut()


async def test_a_denied_microphone_is_explained(voice_server):
    flags = [*BASE_FLAGS, "--deny-permission-prompts"]
    async with chromium_page(f"http://127.0.0.1:{voice_server}/", flags) as (page, frames, errors):
        await page.locator("#mic").click()
        alert = page.locator("#alert")
        await alert.wait_for(state="visible", timeout=15_000)
        assert "Microphone access was denied" in await alert.inner_text()
        assert await page.locator("#mic").get_attribute("data-state") == "off"
        assert not frames.of("input_audio_buffer.append", sent=True)


NODE_CHECK = """
import { Resampler, CaptureConverter, floatToPcm16, pcm16ToBytes, pcm16BytesToFloat, bytesToBase64, base64ToBytes }
  from "PCM_URL";
import { Timeline } from "PLAYER_URL";

const input = JSON.parse(await new Promise((resolve) => {
  let text = ""; process.stdin.on("data", (d) => text += d); process.stdin.on("end", () => resolve(text));
}));
const out = { resampled: {}, streamed: {} };
const tone = (rate, seconds, parts) => Float32Array.from({ length: Math.round(rate * seconds) },
  (_, i) => parts.reduce((sum, [f, a]) => sum + a * Math.sin(2 * Math.PI * f * i / rate), 0));
for (const rate of input.rates) {
  const x = tone(rate, 1, [[440, 0.4], [3000, 0.2]]);
  out.resampled[rate] = Array.from(new Resampler(rate, 24000).process(x));
  const r = new Resampler(rate, 24000); const sizes = [128, 37, 1, 500, 128, 3]; const parts = [];
  for (let i = 0, k = 0; i < x.length; i += sizes[k++ % sizes.length]) {
    parts.push(...r.process(x.subarray(i, i + sizes[k % sizes.length])));
  }
  out.streamed[rate] = parts;
}
out.alias = Array.from(new Resampler(48000, 24000).process(tone(48000, 1, [[15000, 0.5]])));
const converter = new CaptureConverter(44100, { frameMs: 20 });
const x = tone(44100, 1, [[440, 0.5]]);
const frames = [];
for (let i = 0; i < x.length; i += 128) frames.push(...converter.push(x.subarray(i, i + 128)));
out.frameBytes = frames.map((f) => f.bytes.length);
out.frameRms = frames.map((f) => f.rms);
out.pcm = bytesToBase64(pcm16ToBytes(floatToPcm16(Float32Array.from(input.floats))));
out.decoded = Array.from(pcm16BytesToFloat(base64ToBytes(input.pcm)));
const t = new Timeline(24000);
t.schedule("a", 1.0, 4800); t.schedule("a", 1.2, 2400); t.schedule("b", 1.3, 24000);
out.timeline = [t.playedMs("a", 0.5), t.playedMs("a", 1.25), t.playedMs("a", 9), t.current(1.25), t.current(1.35),
                t.playedMs("b", 1.35)];
t.cut(1.25);
out.timeline.push(t.playedMs("a", 9), t.playedMs("b", 9), t.current(1.26));
const u = new Timeline(24000);
u.schedule("a", 0, 2400); u.schedule("b", 0.1, 2400); u.prune(1);
out.timeline.push(u.playedMs("a", 1), u.playedMs("b", 1));
console.log(JSON.stringify(out));
"""


def test_pcm16_conversion_module_in_node():
    rng = np.random.default_rng(7)
    floats = np.concatenate([rng.uniform(-1.2, 1.2, 2000), [-2.0, -1.0, 0.0, 0.25, 32767 / 32768, 1.0, 3.0]])
    floats = floats.astype(np.float32)
    pcm = float_to_pcm16(floats)
    script = NODE_CHECK.replace("PCM_URL", (WEB / "pcm.js").as_uri())
    script = script.replace("PLAYER_URL", (WEB / "player.js").as_uri())
    rates = [48_000, 44_100, 16_000, 24_000]
    result = subprocess.run(["node", "--input-type=module", "-e", script], capture_output=True, text=True, check=True,
                            input=json.dumps({"rates": rates, "floats": floats.tolist(),
                                              "pcm": base64.b64encode(pcm).decode()}), timeout=60)
    out = json.loads(result.stdout)

    for rate in rates:
        ours = np.array(out["resampled"][str(rate)], np.float32)
        # Block sizes do not change the stream.
        np.testing.assert_allclose(np.array(out["streamed"][str(rate)], np.float32), ours, atol=1e-6)
        x = np.arange(rate) / rate
        signal = (0.4 * np.sin(2 * np.pi * 440 * x) + 0.2 * np.sin(2 * np.pi * 3000 * x)).astype(np.float32)
        expected = soxr.resample(signal, rate, 24_000, quality="VHQ")
        n = min(len(ours), len(expected))
        assert abs(len(ours) - 24_000) <= 40  # only the last kernel half-width is still pending
        # Same timing and amplitude as soxr, away from the edges (different filters settle differently).
        error = np.max(np.abs(ours[200:n - 200] - expected[200:n - 200]))
        print(f"{rate} Hz -> 24 kHz: max difference from soxr {error:.2e}")
        assert error < 1e-4, rate
    # Content above the output's Nyquist frequency is filtered out, not folded into the speech band.
    assert rms_dbfs(np.array(out["alias"][200:-200], np.float32)) < -60

    # 20 ms frames of PCM16 at 24 kHz, with their level.
    assert set(out["frameBytes"]) == {960} and len(out["frameBytes"]) in (49, 50)
    assert np.allclose(out["frameRms"][2:], 0.5 / np.sqrt(2), atol=0.01)
    # Same bytes as the server's own conversion, little-endian, and back.
    assert base64.b64decode(out["pcm"]) == pcm
    np.testing.assert_array_equal(np.array(out["decoded"], np.float32), pcm16_to_float(pcm))

    # The played position: exact in samples, frozen by a stop.
    # Idle: finished items are forgotten, except the latest (an underrun may be followed by more of it).
    assert out["timeline"] == [0, 250, 300, "a", "b", 50, 250, 0, None, 0, 100]
