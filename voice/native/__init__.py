"""The native audio-token path: Whisper encoder -> trained projector -> LLM fed with embeddings.

`voice.native.model.NativeAudioChat` is the entry point; `python -m training.data` makes
training data and `python -m training.train` trains the projector (the `train` extra).
"""
