"""The Python client SDK of the OpenAI Realtime protocol, for this server and any other Realtime server.

    client = await RealtimeClient.connect("ws://127.0.0.1:8000/v1/realtime", player=Speaker(),
                                          reconnect=Backoff(), on_tool_call=run_tool)
    # or, in-process: await RealtimeClient.local(server)    (server/app.py's VoiceServer)
    await client.stream_microphone(Microphone())             # or send_text(...), stream_audio(pcm)
    async for received in client.events(): ...               # received.event: the protocol's dict

- `events.py`: builders of client events and typed views of server events (`received.typed`);
- `playback.py`: the reply played through a `Player`; on barge-in (`output_audio_buffer.cleared`, or
  with `stop_on_speech=True` the user's speech, for servers that do not send it) playback stops and
  `conversation.item.truncate` goes out with the `audio_end_ms` actually played;
- `backoff.py`: reconnection after the connection drops (the session's settings are sent again);
- `tools.py`: `on_tool_call(call)` answers each function call; its output goes back as a
  `function_call_output`, then `response.create` (with `tool_follow_up` as its `response`);
- `devices.py`: `Microphone` and `Speaker` through `sounddevice` (`pip install voice-server[audio]`),
  imported only when used: the rest works without it.

`voice talk` (talk.py) and the benchmarks use it.
"""

from clients.python.backoff import Backoff
from clients.python.client import RealtimeClient, ReceivedEvent, load_wav_pcm24
from clients.python.events import AudioDelta, FunctionCall, ResponseDone, SpeechStarted, Transcript, typed
from clients.python.playback import BufferPlayer, Playback, Player

__all__ = ["AudioDelta", "Backoff", "BufferPlayer", "FunctionCall", "Playback", "Player", "RealtimeClient",
           "ReceivedEvent", "ResponseDone", "SpeechStarted", "Transcript", "load_wav_pcm24", "typed"]
