"""The served native backend against a server we did not write: llama.cpp's `llama-server`, taking
`input_audio` content parts through libmtmd, serving the bundled native model (SmolLM2 with its
LoRA, and the Whisper encoder + projector exported by `training.mmproj`)."""

from __future__ import annotations

import ctypes
import json
import re
import subprocess
import threading
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import soundfile

from tests.helpers import DATA, ROOT, free_port, reference, stop, wait_http, wer
from tests.realtime_sdk import clip
from tests.test_native_served import answers_a_native_turn
from training.mmproj import BOUNDARY_TEXT, mmproj_file
from voice import models
from voice.audio import ASR_RATE, WIRE_RATE, pcm16_to_float, resample
from voice.llm.base import GenerationOptions
from voice.native.base import REPEAT_INSTRUCTION
from voice.native.encoder import WhisperEncoder
from voice.native.projector import NumpyProjector
from voice.native.served import ServedAudioChat, audio_message

pytestmark = pytest.mark.slow

CLIP = "04_v2j_would_you_please_turn_on_living_room_lamp.wav"
KEY = "test-llama-server-key"


def speech_16k() -> np.ndarray:
    return resample(pcm16_to_float(clip(CLIP)), WIRE_RATE, ASR_RATE)


@pytest.fixture(scope="module")
def llama_server_binary() -> Path:
    """llama.cpp's C++ server, built once from the installed llama-cpp-python's source release."""
    built = subprocess.run([str(ROOT / "bin" / "build-llama-server")], check=True, capture_output=True, text=True)
    return Path(built.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def mmproj(artifacts: Path, native_projector: Path) -> Path:
    return mmproj_file(native_projector, artifacts / "mmproj")


@pytest.fixture(scope="module")
def llama_server(llama_server_binary: Path, mmproj: Path, native_projector: Path, artifacts: Path):
    """`llama-server` with the native model, one slot, its LoRA applied at run time as a user would."""
    adapter = NumpyProjector.load(native_projector).adapter
    port = free_port()
    command = [str(llama_server_binary), "-m", str(models.llama_file(models.gguf_model(None))), "--mmproj", str(mmproj),
               "--host", "127.0.0.1", "--port", str(port), "-c", "4096", "-np", "1", "-t", "2",
               "--api-key", KEY, "--no-webui"]
    if adapter is not None:
        command += ["--lora", str(adapter)]
    with open(artifacts / "llama-server-native.log", "wb") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_http(f"http://127.0.0.1:{port}/health", process)
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        stop(process)


def test_llama_cpp_computes_the_embedded_paths_audio_embeddings(mmproj: Path, native_projector: Path):
    """libmtmd's encoder and projector on the exported file against ours (numpy, CTranslate2 encoder)
    on the same audio padded to Whisper's 30 s window, as llama.cpp pads it. The clip is a loud one:
    on quiet ones (peak 0.2-0.3) the two log-mel front ends differ enough to move the rows by 1-2%."""
    audio, rate = soundfile.read(DATA / "17_sb_LJ050-0131.wav", dtype="float32")
    audio = resample(audio, rate, ASR_RATE)
    theirs = _mtmd_embeddings(mmproj, audio)
    projector = NumpyProjector.load(native_projector)
    encoder = WhisperEncoder(None, compute_type="float32")
    ours = projector(encoder.encode(audio, pad_to_window=True))
    assert theirs.shape == (len(ours) + 2, projector.config.llm_dim)  # + the begin / end-of-audio rows
    error = np.linalg.norm(theirs[1:-1] - ours) / np.linalg.norm(ours)
    assert error < 5e-3, error


def test_llama_server_answers_real_speech_through_the_served_backend(llama_server: str):
    native = ServedAudioChat(llama_server, api_key=KEY)
    deltas = list(native.stream_reply(speech_16k(), [], GenerationOptions(max_tokens=24, temperature=0.0),
                                      threading.Event()))
    assert len(deltas) > 1 and "".join(deltas).strip()  # streamed, token by token
    heard = native.transcribe(speech_16k(), max_tokens=24)
    assert wer(reference(CLIP), heard) < 1.0, heard  # it heard some of the words: the audio went through


@pytest.mark.training
@pytest.mark.parametrize("instruction,system", [(REPEAT_INSTRUCTION, None), (None, "You are a kind voice assistant.")])
def test_training_lays_padded_examples_out_as_llama_server_does(llama_server: str, tmp_path: Path,
                                                                instruction: str | None, system: str | None):
    """`--padded-window` examples train on the tokens llama-server puts around the audio: its chat
    template, the instruction joined to the audio, and the boundary embeddings (the newline's)."""
    from training.train import Samples

    np.save(tmp_path / "features.npy", np.zeros((1500, 384), np.float16))
    example = {"text": "turn on the lamp", "system": system, "reply_ids": None if instruction else [42],
               "finished": True, "features": str(tmp_path / "features.npy"), "padded_window": True}
    llm_file = models.llama_file(models.gguf_model(None))
    samples = Samples([example], llm_file, max_target=8)
    sample = samples.get(0, repeat=instruction is not None)

    messages = [{"role": "system", "content": system}] if system else []
    parts = [{"type": "text", "text": instruction}] if instruction else []
    messages.append({"role": "user", "content": [*parts, audio_message(speech_16k())["content"][0]]})
    request = urllib.request.Request(llama_server.removesuffix("/v1") + "/apply-template", method="POST",
                                     data=json.dumps({"messages": messages, "add_generation_prompt": True}).encode(),
                                     headers={"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=60) as response:
        prompt = json.loads(response.read())["prompt"]
    before, after = re.split(r"<__media_\w*__>", prompt)
    newline = samples.tokenize(BOUNDARY_TEXT)
    assert sample.before == samples.tokenize(before) + newline
    assert sample.after == newline + samples.tokenize(after)


async def test_voice_serve_answers_native_turns_through_llama_server(llama_server: str, artifacts: Path):
    await answers_a_native_turn(llama_server, KEY, artifacts / "voice-server-llama-server.log", timeout=180)


def _mtmd_embeddings(mmproj: Path, audio_16k: np.ndarray) -> np.ndarray:
    """The LLM-input rows libmtmd makes of one audio clip (through llama-cpp-python's bindings)."""
    import llama_cpp
    from llama_cpp import mtmd_cpp as mtmd

    llama_cpp.llama_backend_init()
    model = llama_cpp.llama_model_load_from_file(str(models.llama_file(models.gguf_model(None))).encode(),
                                                 llama_cpp.llama_model_default_params())
    params = mtmd.mtmd_context_params_default()
    params.use_gpu, params.n_threads, params.warmup = False, 2, False
    context = mtmd.mtmd_init_from_file(str(mmproj).encode(), model, params)
    assert context and mtmd.mtmd_support_audio(context)
    samples = np.ascontiguousarray(audio_16k, dtype=np.float32)
    bitmap = mtmd.mtmd_bitmap_init_from_audio(samples.size, samples.ctypes.data_as(ctypes.POINTER(ctypes.c_float)))
    chunks = mtmd.mtmd_input_chunks_init()
    try:
        prompt = mtmd.mtmd_default_marker()
        text = mtmd.mtmd_input_text(prompt, len(prompt), False, True)
        assert mtmd.mtmd_tokenize(context, chunks, ctypes.byref(text), (mtmd.mtmd_bitmap_p_ctypes * 1)(bitmap), 1) == 0
        chunk = next(chunk for chunk in (mtmd.mtmd_input_chunks_get(chunks, i)
                                         for i in range(mtmd.mtmd_input_chunks_size(chunks)))
                     if mtmd.mtmd_input_chunk_get_type(chunk) == mtmd.MTMD_INPUT_CHUNK_TYPE_AUDIO)
        rows = mtmd.mtmd_input_chunk_get_n_tokens(chunk)
        assert mtmd.mtmd_encode_chunk(context, chunk) == 0
        embedded = mtmd.mtmd_get_output_embd(context)
        width = llama_cpp.llama_model_n_embd(model)
        return np.ctypeslib.as_array(embedded, shape=(rows * width,)).reshape(rows, width).copy()
    finally:
        mtmd.mtmd_input_chunks_free(chunks)
        mtmd.mtmd_bitmap_free(bitmap)
        mtmd.mtmd_free(context)
        llama_cpp.llama_model_free(model)
