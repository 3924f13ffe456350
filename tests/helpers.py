"""Shared test helpers: real recordings, their reference transcripts, servers on loopback."""

from __future__ import annotations

import asyncio
import csv
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import jiwer

from voice.asr.hallucination import normalise

DATA = Path(__file__).parent / "data"
ROOT = Path(__file__).parent.parent


def reference(name: str) -> str:
    with open(DATA / "manifest.tsv", newline="", encoding="utf-8") as handle:
        for row in csv.DictReader(handle, delimiter="\t"):
            if row["file"] == name:
                return row["reference_transcript"]
    raise KeyError(name)


def wer(reference_text: str, hypothesis: str) -> float:
    ref, hyp = normalise(reference_text), normalise(hypothesis)
    return jiwer.wer(ref, hyp) if hyp else 1.0


async def pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter, record: bytearray | None = None) -> None:
    """Copy one direction of a proxied TCP connection until it closes (keeping its bytes in `record`)."""
    try:
        while data := await source.read(65536):
            if record is not None:
                record += data
            sink.write(data)
            await sink.drain()
    except OSError:
        pass
    finally:
        sink.close()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_http(url: str, process: subprocess.Popen, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            time.sleep(0.3)
    raise TimeoutError(f"{url} did not answer within {timeout} s")


def spawn_voice_server(*args: str, log_path: Path | None = None) -> tuple[subprocess.Popen, int]:
    """`voice serve` on a free loopback port, without waiting for it."""
    port = free_port()
    log = open(log_path, "wb") if log_path else subprocess.DEVNULL
    process = subprocess.Popen(
        [sys.executable, "-m", "server.cli", "serve", "--host", "127.0.0.1", "--port", str(port), *args],
        cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    return process, port


def start_voice_server(*args: str, log_path: Path | None = None) -> tuple[subprocess.Popen, int]:
    """`voice serve` on a free loopback port; returns once /healthz answers (models loaded)."""
    process, port = spawn_voice_server(*args, log_path=log_path)
    try:
        wait_http(f"http://127.0.0.1:{port}/healthz", process)
    except Exception:
        process.kill()
        raise
    return process, port


def start_llama_server(port: int, log) -> subprocess.Popen:
    """llama.cpp's own OpenAI-compatible server on the bundled GGUF, on loopback."""
    from voice.models import gguf_model

    process = subprocess.Popen(
        [sys.executable, "-m", "llama_cpp.server", "--model", str(gguf_model(None)), "--host", "127.0.0.1",
         "--port", str(port), "--n_ctx", "2048", "--n_threads", "2"], cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    wait_http(f"http://127.0.0.1:{port}/v1/models", process)
    return process


def stop(process: subprocess.Popen) -> None:
    process.terminate()
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def record_decodes(monkeypatch, module, what=None) -> list:  # noqa: ANN001 - pytest's fixture, a module, a callable
    """`what(ctx)` for each call of `module.llama_decode` from now on (it still decodes); by default
    the name of the thread that calls it."""
    seen: list = []
    real_decode = module.llama_decode

    def decode(ctx, batch):  # noqa: ANN001, ANN202 - ctypes arguments
        seen.append(what(ctx) if what else threading.current_thread().name)
        return real_decode(ctx, batch)

    monkeypatch.setattr(module, "llama_decode", decode)
    return seen
