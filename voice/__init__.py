"""The speech pipeline: audio utilities, VAD, ASR, LLM, TTS and the turn manager (no network code)."""
