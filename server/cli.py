"""The `voice` command: `voice serve` runs the server, `voice talk FILE.wav` talks to one."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from server.cli_errors import UsageError, check_talk, explain
from server.logs import setup_logging
from voice import models

if TYPE_CHECKING:
    from server.app import VoiceServer


def _limit_malloc_arenas() -> None:
    """glibc gives each thread that allocates its own heap arena (up to 8 per core), and model
    worker threads leave them fragmented: a long-running server then grows for hours. Two arenas
    cost nothing measurable here (the heavy work runs in native code) and keep memory flat."""
    import ctypes

    try:
        ctypes.CDLL("libc.so.6").mallopt(-8, 2)  # M_ARENA_MAX
    except (OSError, AttributeError):
        pass  # not glibc


def _positive_seconds(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds, not {text}")
    return value


def server_from_args(args: argparse.Namespace) -> VoiceServer:
    """The server `voice serve` runs with these options, its models not loaded yet."""
    from server.app import ServerOptions, VoiceServer
    from server.config import SessionConfig, TurnDetection
    from server.connection import ConnectionLimits
    from server.conversation import ConversationLimits
    from voice.engine import Engine, EngineConfig
    from voice.pipeline import PIPELINES
    from voice.vad import VadConfig

    pipeline = PIPELINES[args.pipeline]
    if pipeline.answers_speech and args.llm not in (None, "fast"):
        raise UsageError(f"--llm {args.llm}: the native pipeline's projector is trained for SmolLM2 (--llm fast)")
    llm_model = models.cascade_llm(args.llm, args.llm_model, pipeline.answers_speech)
    engine_config = EngineConfig(
        asr_model=args.asr_model, llm_model=llm_model, llm_url=args.llm_url, llm_name=args.llm_name,
        llm_api_key=args.llm_api_key, llm_timeout_s=args.llm_timeout, llm_context=args.llm_context,
        llm_parallel=args.llm_parallel, tts_voice=args.tts_voice, tts=args.tts, tts_url=args.tts_url,
        tts_name=args.tts_name, tts_api_key=args.tts_api_key, threads=args.threads, naive=pipeline.baseline,
        turn_model=args.turn_model,
        native_projector=args.native_projector or ("bundled" if pipeline.answers_speech else None),
        native_url=args.native_url, native_name=args.native_name, native_api_key=args.native_api_key,
    )
    if pipeline.baseline:
        args.silence_ms, args.turn_detection = 500, "server_vad"
    vad = VadConfig(threshold=args.vad_threshold, silence_duration_ms=args.silence_ms,
                    prefix_padding_ms=args.prefix_padding_ms, min_speech_ms=args.min_speech_ms)
    if pipeline.baseline:  # plain VAD decisions, as simple implementations make them
        vad = replace(vad, tail_floor_margin_db=None, tail_peak_drop_db=None)
    if args.turn_detection == "semantic_vad":
        detection = TurnDetection.semantic(args.eagerness, threshold=args.vad_threshold,
                                           prefix_padding_ms=args.prefix_padding_ms, min_speech_ms=args.min_speech_ms)
    else:
        detection = TurnDetection(vad=vad)
    session = SessionConfig(turn_detection=detection, max_output_tokens=args.max_tokens, pipeline=args.pipeline,
                            **({"instructions": args.instructions} if args.instructions else {}))
    limits = ConnectionLimits(max_message_bytes=args.max_message_bytes, idle_timeout_s=args.idle_timeout,
                              max_session_s=args.max_session, max_buffer_seconds=args.max_buffer_seconds,
                              max_send_buffer_bytes=args.max_send_buffer, max_audio_ahead_s=args.max_audio_ahead,
                              conversation=ConversationLimits(max_items=args.max_conversation_items,
                                                              max_text_bytes=args.max_conversation_bytes))
    options = ServerOptions(host=args.host, port=args.port, api_key=args.api_key or None,
                            allowed_origins=tuple(o for o in args.allowed_origins.split(",") if o),
                            max_sessions=args.max_sessions, limits=limits)
    return VoiceServer(None, session, options,
                       load_engine=lambda: Engine.load(engine_config).warm(session.instructions))


def embedded_server(*options: str) -> VoiceServer:
    """A server to run inside an app (`async with embedded_server() as server:`), with any of `voice
    serve`'s options (its port by default: one the system picks); it loads its models on entering
    and closes them on exit."""
    return server_from_args(build_parser().parse_args(["serve", "--port", "0", *options]))


def _serve(args: argparse.Namespace) -> None:
    _limit_malloc_arenas()
    asyncio.run(server_from_args(args).serve_forever())


def _audio_api(args: argparse.Namespace) -> None:
    _limit_malloc_arenas()
    from server.audio_chat_api import serve
    from voice.native.model import NativeAudioChat

    native = NativeAudioChat(models.native_projector(args.native_projector),
                             llm_model=None if args.llm_model == models.DEFAULT else args.llm_model,
                             encoder=None if args.asr_model == models.DEFAULT else args.asr_model,
                             n_threads=args.threads, parallel=args.parallel)
    serve(native, args.model_id or native.name, args.host, args.port, api_key=args.api_key or None)


def _tts_api(args: argparse.Namespace) -> None:
    _limit_malloc_arenas()
    from server.speech_api import serve
    from voice.engine import EngineConfig, build_voices

    voices = build_voices(EngineConfig(tts=args.tts, tts_voice=args.tts_voice, threads=args.threads))
    serve(voices, args.host, args.port, api_key=args.api_key or None)


def _voice_options(parser: argparse.ArgumentParser) -> None:
    """The options that choose the voices (`voice serve`, `voice tts-api`)."""
    parser.add_argument("--tts", default=None,
                        help="the voices offered, comma-separated, the first the default: piper (--tts-voice) or "
                             "piper:VOICE, kokoro (af_heart, am_michael; pip extra kokoro) or kokoro:VOICE.bin, "
                             "url (those --tts-url lists) or url:NAME (default: url with --tts-url, else piper)")
    parser.add_argument("--tts-voice", default=models.DEFAULT,
                        help="Piper voice: 'bundled' (en_US-joe-medium), an .onnx path or a voice name")


def _talk(args: argparse.Namespace) -> None:
    from clients.python.talk import talk

    check_talk(args)
    tools = json.loads(Path(args.tools).read_text()) if args.tools else None
    asyncio.run(talk(args.url, Path(args.file), out=Path(args.out), instructions=args.instructions,
                     pipeline=args.pipeline, api_key=args.api_key, speed=args.speed, tools=tools))


def _log_options(parser: argparse.ArgumentParser, defaults: bool) -> None:
    """The log options, taken before or after the subcommand: after it they default to SUPPRESS,
    so a value given before the subcommand is not overwritten by the subcommand's default."""
    parser.add_argument("--log-level", default=os.environ.get("VOICE_LOG_LEVEL", "INFO") if defaults
                        else argparse.SUPPRESS, help="DEBUG, INFO (default: one line per turn), WARNING")
    parser.add_argument("--log-json", action="store_true", default=False if defaults else argparse.SUPPRESS,
                        help="log JSON lines (with the session id)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="voice", description="Self-hosted real-time voice assistant server.")
    _log_options(parser, defaults=True)
    commands = parser.add_subparsers(dest="command", required=True)
    logging_options = argparse.ArgumentParser(add_help=False)
    _log_options(logging_options, defaults=False)

    serve = commands.add_parser("serve", help="run the voice server", parents=[logging_options])
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--asr-model", default=models.DEFAULT,
                       help="faster-whisper model: 'bundled' (tiny.en), a CTranslate2 directory or a hub name")
    serve.add_argument("--llm", choices=list(models.LLM_CHOICES), default=None,
                       help=f"the brain, by what it is for (default {models.DEFAULT_LLM_CHOICE}): "
                            + ", ".join(f"{k} = {v}" for k, v in models.LLM_CHOICES.items()))
    serve.add_argument("--llm-model", default=None,
                       help="any GGUF for llama.cpp instead of --llm: 'bundled' (SmolLM2-135M), a path, or "
                            + ", ".join(f"'{n}' (pip extra {s.extra})" for n, s in models.PARTED_LLMS.items()))
    serve.add_argument("--llm-url", default=None,
                       help="OpenAI-compatible server instead of llama.cpp in-process, e.g. http://127.0.0.1:8080/v1")
    serve.add_argument("--llm-name", default=None, help="model name to request from --llm-url")
    serve.add_argument("--llm-api-key", default=os.environ.get("VOICE_LLM_API_KEY"))
    serve.add_argument("--llm-timeout", type=float, default=20.0,
                       help="seconds to wait for the --llm-url server (connecting, or its next bytes)")
    serve.add_argument("--llm-context", type=int, default=2048,
                       help="tokens per llama.cpp context (the prompt's history is kept to about 1,000)")
    serve.add_argument("--llm-parallel", type=int, default=4,
                       help="llama.cpp contexts answering at once; each keeps one conversation cached")
    serve.add_argument("--pipeline", choices=["cascade", "native", "naive"], default="cascade",
                       help="the default path of a turn: cascade (ASR -> LLM), native (speech embeddings -> LLM); "
                            "naive: the benchmark baseline alone (500 ms silence, Whisper on 30 s windows, whole "
                            "reply before TTS, whole TTS before sending)")
    serve.add_argument("--native-projector", default=None,
                       help="projector .npz that offers the native pipeline ('bundled': the one trained here); "
                            "default: native off unless --pipeline native")
    serve.add_argument("--native-url", default=None,
                       help="OpenAI-compatible server that takes audio (vLLM with Ultravox, voice audio-api) "
                            "answering the native turns, e.g. http://gpu-host:8000/v1")
    serve.add_argument("--native-name", default=None, help="model name to request from --native-url")
    serve.add_argument("--native-api-key", default=os.environ.get("VOICE_NATIVE_API_KEY"))
    _voice_options(serve)
    serve.add_argument("--tts-url", default=None,
                       help="OpenAI-compatible speech server (POST /audio/speech, streamed pcm) for the voices, "
                            "e.g. http://gpu-host:8002/v1 (voice tts-api)")
    serve.add_argument("--tts-name", default="tts-1", help="model name to request from --tts-url")
    serve.add_argument("--tts-api-key", default=os.environ.get("VOICE_TTS_API_KEY"))
    serve.add_argument("--instructions", default=None, help="system prompt for every session")
    serve.add_argument("--max-tokens", type=int, default=160)
    serve.add_argument("--turn-detection", choices=["semantic_vad", "server_vad"], default="semantic_vad",
                       help="semantic_vad (default): a pause ends the turn after a silence that depends on what "
                            "the words and the voice say there; server_vad: always --silence-ms")
    serve.add_argument("--eagerness", choices=["low", "medium", "high", "auto"], default="auto",
                       help="semantic_vad: high answers sooner and cuts in more, low waits longer "
                            "(voice.turn_taking.END_POLICIES)")
    serve.add_argument("--turn-model", default=models.DEFAULT,
                       help="the voice's end-of-turn model for semantic_vad: 'bundled' (Smart Turn v3.2), an ONNX "
                            "file of it, or 'off' (the words alone)")
    serve.add_argument("--silence-ms", type=int, default=500, help="server_vad: silence that ends a turn")
    serve.add_argument("--prefix-padding-ms", type=int, default=300)
    serve.add_argument("--min-speech-ms", type=int, default=160, help="speech needed to open a turn")
    serve.add_argument("--vad-threshold", type=float, default=0.5)
    serve.add_argument("--threads", type=int, default=2, help="CPU threads per model")
    limits = serve.add_argument_group("access and limits")
    limits.add_argument("--api-key", default=os.environ.get("VOICE_API_KEY"),
                        help="require this key (Bearer header or openai-insecure-api-key.KEY subprotocol); "
                             "default: $VOICE_API_KEY, none")
    limits.add_argument("--allowed-origins", default=os.environ.get("VOICE_ALLOWED_ORIGINS", ""),
                        help="comma-separated browser origins allowed to connect (default: any)")
    limits.add_argument("--max-sessions", type=int, default=16)
    limits.add_argument("--max-message-bytes", type=int, default=1024 * 1024)
    limits.add_argument("--max-buffer-seconds", type=float, default=120.0,
                        help="uncommitted input audio a session may hold")
    limits.add_argument("--max-audio-ahead", type=_positive_seconds, default=5.0,
                        help="seconds of input audio a session may send ahead of real time (a burst allowance "
                             "refilled at real time; default 5); faster audio gets input_audio_rate_exceeded "
                             "and is dropped")
    limits.add_argument("--idle-timeout", type=float, default=300.0, help="seconds without a client event")
    limits.add_argument("--max-send-buffer", type=int, default=16 * 1024 * 1024,
                        help="bytes a client may leave unread before it is closed as too slow")
    limits.add_argument("--max-session", type=float, default=3600.0, help="maximum session length in seconds")
    limits.add_argument("--max-conversation-items", type=int, default=1000,
                        help="items a session's conversation may hold (then: conversation_full)")
    limits.add_argument("--max-conversation-bytes", type=int, default=8 * 1024 * 1024,
                        help="bytes of text (messages, transcripts, function calls and outputs) a session's "
                             "conversation may hold")
    serve.set_defaults(func=_serve)

    talk = commands.add_parser("talk", help="stream a WAV file to a running server and save the reply",
                                parents=[logging_options])
    talk.add_argument("file")
    talk.add_argument("--url", default="ws://127.0.0.1:8000/v1/realtime")
    talk.add_argument("--out", default="reply.wav", help="where to save the assistant's audio")
    talk.add_argument("--instructions", default=None)
    talk.add_argument("--pipeline", choices=["cascade", "native"], default=None,
                      help="ask for this path (the server's default if not given)")
    talk.add_argument("--api-key", default=os.environ.get("VOICE_API_KEY"))
    talk.add_argument("--speed", type=float, default=1.0, help="streaming pace (1.0 = real time)")
    talk.add_argument("--tools", default=None,
                      help="a JSON file of Realtime function tools to declare; their calls are printed, not run")
    talk.set_defaults(func=_talk)

    api = commands.add_parser("audio-api", help="the embedded native model as an OpenAI-compatible "
                                                "chat-completions server taking input_audio", parents=[logging_options])
    api.add_argument("--host", default="127.0.0.1")
    api.add_argument("--port", type=int, default=8001)
    api.add_argument("--native-projector", default="bundled", help="projector .npz ('bundled': the one trained here)")
    api.add_argument("--llm-model", default=models.DEFAULT, help="GGUF the projector was trained for")
    api.add_argument("--asr-model", default=models.DEFAULT, help="Whisper model whose encoder hears the audio")
    api.add_argument("--model-id", default=None, help="the id /v1/models lists (default: native:GGUF-NAME)")
    api.add_argument("--parallel", type=int, default=2, help="replies generated at the same time")
    api.add_argument("--threads", type=int, default=2)
    api.add_argument("--api-key", default=os.environ.get("VOICE_API_KEY"), help="require Bearer KEY")
    api.set_defaults(func=_audio_api)

    tts = commands.add_parser("tts-api", help="this server's voices as an OpenAI-compatible speech server "
                                               "(POST /v1/audio/speech, streamed)", parents=[logging_options])
    tts.add_argument("--host", default="127.0.0.1")
    tts.add_argument("--port", type=int, default=8002)
    _voice_options(tts)
    tts.add_argument("--threads", type=int, default=2)
    tts.add_argument("--api-key", default=os.environ.get("VOICE_API_KEY"), help="require Bearer KEY")
    tts.set_defaults(func=_tts_api)

    return parser


def main(argv: list[str] | None = None) -> None:
    parser = build_parser()
    args = parser.parse_args(argv)
    setup_logging(args.log_level, json_lines=args.log_json)
    try:
        args.func(args)
    except KeyboardInterrupt:
        pass
    except Exception as exc:  # noqa: BLE001 - ordinary mistakes get one line; anything else its traceback
        line = explain(exc, args)
        if line is None:
            raise
        parser.exit(2, f"voice: error: {line}\n")


if __name__ == "__main__":
    main()
