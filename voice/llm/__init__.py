"""Chat language models: llama.cpp in-process, or any OpenAI-compatible server."""
