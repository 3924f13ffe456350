"""The native audio-token path at run time: Whisper encoder -> trained projector -> LLM fed with embeddings.

`voice.native.model.NativeAudioChat` is the embedded model and `voice.native.served.ServedAudioChat`
one behind an OpenAI-compatible server. The projector is trained by `training/` at the repository
root, which this package never imports.
"""
