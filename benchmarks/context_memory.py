"""Resident memory of one llama.cpp context over a conversation: how much of its KV cache the
process touches as the turns go by (the memory is reserved at load but becomes resident only as
cache cells are first written).

    python -m benchmarks.context_memory --turns 60
"""

from __future__ import annotations

import argparse
import json
import random
import threading

import psutil

from voice.llm.base import ChatMessage, GenerationOptions
from voice.llm.llamacpp import LlamaCppChat
from voice.models import gguf_model

_WORDS = ("the lamp living room turn on please go forward ten meters what time is it tell me a joke "
          "about the weather today").split()


def main(argv: list[str] | None = None) -> list[dict[str, float]]:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.context_memory", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--turns", type=int, default=60)
    parser.add_argument("--context", type=int, default=2048, help="tokens per context (as --llm-context)")
    parser.add_argument("--every", type=int, default=10, help="print every this many turns")
    parser.add_argument("--touch", action="store_true",
                        help="first decode one full batch and forget it, so that every buffer a prompt can use is "
                             "resident before the conversation (what is left of the growth is not first touches)")
    args = parser.parse_args(argv)
    process = psutil.Process()
    chat = LlamaCppChat(gguf_model(None), n_ctx=args.context, parallel=1)
    if args.touch:
        context = chat._contexts[0]
        context.eval([context.token_bos()] * context.n_batch)
        context.reset()
    random.seed(1)
    system = ChatMessage("system", "You are a friendly voice assistant.")
    history: list[ChatMessage] = []
    rows = [{"turn": 0, "rss_mb": process.memory_info().rss / 2**20}]
    print(json.dumps(rows[-1]), flush=True)
    for turn in range(1, args.turns + 1):
        history.append(ChatMessage("user", " ".join(random.choices(_WORDS, k=8))))
        reply = "".join(chat.stream_chat([system, *history], GenerationOptions(max_tokens=30), threading.Event()))
        history = [*history, ChatMessage("assistant", reply.strip() or "ok")][-6:]  # a short window
        if turn % args.every == 0:
            rows.append({"turn": turn, "rss_mb": process.memory_info().rss / 2**20})
            print(json.dumps(rows[-1]), flush=True)
    return rows


if __name__ == "__main__":
    main()
