"""The Python client SDK of the OpenAI Realtime protocol, for this server and others (`voice talk`,
the benchmarks and apps use it). The sound card (clients/python/devices.py) is an optional extra."""

from clients.python.backoff import Backoff
from clients.python.client import RealtimeClient, ReceivedEvent, load_wav_pcm24
from clients.python.events import AudioDelta, FunctionCall, ResponseDone, SpeechStarted, Transcript, typed
from clients.python.playback import BufferPlayer, Playback, Player

__all__ = ["AudioDelta", "Backoff", "BufferPlayer", "FunctionCall", "Playback", "Player", "RealtimeClient",
           "ReceivedEvent", "ResponseDone", "SpeechStarted", "Transcript", "load_wav_pcm24", "typed"]
