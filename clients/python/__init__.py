"""A Python client for the voice server's Realtime websocket (used by `voice talk`, benchmarks, kiosks)."""

from clients.python.client import RealtimeClient, ReceivedEvent, load_wav_pcm24

__all__ = ["RealtimeClient", "ReceivedEvent", "load_wav_pcm24"]
