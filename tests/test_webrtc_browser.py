"""The stock OpenAI Agents SDK browser transport (`OpenAIRealtimeWebRTC` of `@openai/agents-realtime`)
in headless Chromium, against `voice serve` on the bundled models: its fake microphone plays a real
recording, and a spoken turn completes over WebRTC (a transcript, and the reply's audio on the track)."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tarfile
import tempfile
from pathlib import Path

import pytest
from playwright.async_api import Route, async_playwright

from tests.helpers import reference, wer
from tests.test_browser import (  # noqa: F401 - fake_microphone: a fixture
    CHROMIUM,
    CHROMIUM_FLAGS,
    LAMP,
    chromium_page,
    fake_microphone,
    start_microphone_with_the_keyboard,
)

pytestmark = pytest.mark.browser

AGENTS_REALTIME = "0.20.0"
AGENTS_REALTIME_SHA256 = "58aebc0d1621c0dd63ce13ccae97fcdf20aef38d3d1d63286974f044c118c447"  # npm's tarball
NPM_CACHE = Path(os.environ.get("VOICE_NPM_CACHE", Path.home() / ".cache" / "voice-server" / "npm"))

PAGE = """<!doctype html><meta charset="utf-8"><title>Agents SDK over WebRTC</title>
<script type="module">
import { OpenAIRealtimeWebRTC } from "/agents-realtime/openai-realtime-agents.mjs";
window.events = [];
// The stock transport, pointed at this server; a plain API key, as a page of one's own may use.
const transport = new OpenAIRealtimeWebRTC({
  baseUrl: `${location.origin}/v1/realtime/calls`, useInsecureApiKey: true });
transport.on("*", (event) => window.events.push(event));
window.transport = transport;
window.replyEnergy = async () => {
  const stats = await transport.connectionState.peerConnection.getStats();
  return [...stats.values()].filter((s) => s.type === "inbound-rtp" && s.kind === "audio")
    .reduce((sum, s) => sum + (s.totalAudioEnergy ?? 0), 0);
};
try {
  await transport.connect({ apiKey: "sk-local", model: "voice-cascade" });
  window.connected = true;
} catch (error) {
  window.connectError = String(error);
}
</script>"""


@pytest.fixture(scope="module")
def agents_sdk() -> Path:
    """The SDK's browser bundle (ES modules), pinned, fetched once with `npm pack` and cached."""
    target = NPM_CACHE / f"agents-realtime-{AGENTS_REALTIME}"
    bundle = target / "package" / "dist" / "bundle"
    if not (bundle / "openai-realtime-agents.mjs").is_file():
        npm = shutil.which("npm")
        assert npm, "npm fetches @openai/agents-realtime for this test"
        with tempfile.TemporaryDirectory() as scratch:
            subprocess.run([npm, "pack", f"@openai/agents-realtime@{AGENTS_REALTIME}", "--pack-destination", scratch],
                           check=True, timeout=300, capture_output=True)
            tarball = next(Path(scratch).glob("*.tgz"))
            assert hashlib.sha256(tarball.read_bytes()).hexdigest() == AGENTS_REALTIME_SHA256
            unpacked = Path(scratch) / "unpacked"
            with tarfile.open(tarball) as archive:
                archive.extractall(unpacked, filter="data")
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.rmtree(target, ignore_errors=True)
            shutil.move(unpacked, target)
    return bundle


async def test_the_agents_sdk_webrtc_transport_completes_a_spoken_turn(voice_server, fake_microphone, agents_sdk):  # noqa: F811
    origin = f"http://127.0.0.1:{voice_server}"

    async def serve_sdk(route: Route) -> None:
        name = route.request.url.rsplit("/", 1)[-1]
        await route.fulfill(path=agents_sdk / name, content_type="text/javascript")

    flags = [*CHROMIUM_FLAGS, f"--use-file-for-fake-audio-capture={fake_microphone}%noloop"]
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=str(CHROMIUM), args=flags)
        try:
            page = await browser.new_page()
            errors: list[str] = []
            page.on("pageerror", lambda error: errors.append(str(error)))
            # The page and the SDK come from the test, at the server's origin (no CORS in the way).
            await page.route(f"{origin}/agents-realtime/*", serve_sdk)
            await page.route(f"{origin}/sdk.html", lambda route: route.fulfill(body=PAGE, content_type="text/html"))
            await page.goto(f"{origin}/sdk.html")
            await page.wait_for_function("window.connected || window.connectError", timeout=30_000)
            assert await page.evaluate("window.connectError ?? null") is None

            async def events(kind: str) -> list[dict]:
                return await page.evaluate(f"window.events.filter((e) => e.type === {kind!r})")

            await page.wait_for_function(
                "window.events.some((e) => e.type === 'conversation.item.input_audio_transcription.completed')",
                timeout=90_000)
            transcript = (await events("conversation.item.input_audio_transcription.completed"))[0]["transcript"]
            assert wer(reference(LAMP), transcript) <= 0.25, transcript
            await page.wait_for_function("window.events.some((e) => e.type === 'output_audio_buffer.stopped')",
                                         timeout=90_000)
            done = (await events("response.done"))[0]
            assert done["response"]["status"] == "completed"
            started, stopped = (await events("output_audio_buffer.started"))[0], \
                (await events("output_audio_buffer.stopped"))[0]
            assert started["response_id"] == stopped["response_id"] == done["response"]["id"]
            assert await events("response.output_audio_transcript.done")
            assert not await events("response.output_audio.delta")  # the audio came on the track
            assert not await events("error")
            # The reply was heard: sound, not silence, reached the browser's receiver.
            energy = await page.evaluate("window.replyEnergy()")
            assert energy > 1e-3, energy
            assert errors == []
            await page.evaluate("window.transport.close()")
        finally:
            await browser.close()


async def test_the_page_in_webrtc_mode(voice_server, fake_microphone):  # noqa: F811
    flags = [*CHROMIUM_FLAGS, f"--use-file-for-fake-audio-capture={fake_microphone}%noloop"]
    async with chromium_page(f"http://127.0.0.1:{voice_server}/?transport=webrtc", flags) as (page, frames, errors):
        assert (await page.evaluate("window.voice.stats"))["transport"] == "webrtc"
        await start_microphone_with_the_keyboard(page)
        final = page.locator('.message.user[data-final="true"] .heard').first
        await final.wait_for(timeout=90_000)
        assert wer(reference(LAMP), await final.inner_text()) <= 0.25
        await page.wait_for_selector('.message.assistant[data-state="done"]', timeout=90_000)
        assert (await page.locator(".message.assistant .heard").first.inner_text()).strip()
        assert not frames.sent and not frames.received  # no websocket: events went on the data channel
        assert await page.locator("#alert").is_hidden()
        assert errors == []
