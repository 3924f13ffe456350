"""The native projector's training, data generation and export; run from the repository root.

`python -m training.data` makes training data, `python -m training.train` trains the projector
(and a LoRA of the LLM), `python -m training.mmproj` exports it for llama.cpp's llama-server.
Needs the `train` extra; never imported by `voice/` or `server/`. See training/README.md.
"""
