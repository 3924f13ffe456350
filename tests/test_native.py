"""The native audio-token path: Whisper encoder -> projector -> llama.cpp fed with embeddings, and training."""

from __future__ import annotations

import json
import subprocess
import sys
import threading

import numpy as np
import pytest
import soundfile

from tests.helpers import DATA, ROOT, record_decodes
from voice import models
from voice.llm.base import ChatMessage, GenerationOptions, LLMError
from voice.native.adapter import read_adapter
from voice.native.base import finished_transcript, loop_start, transcript_token_cap
from voice.native.encoder import WhisperEncoder
from voice.native.llama_embeddings import EmbeddingContext
from voice.native.model import NativeAudioChat, prompt_texts
from voice.native.projector import NumpyProjector, ProjectorConfig, stack_frames
from voice.native.token_embeddings import TokenEmbeddings, token_embedding_matrix

CLIP = "04_v2j_would_you_please_turn_on_living_room_lamp.wav"  # 3.5 s


@pytest.fixture(scope="module")
def audio() -> np.ndarray:
    samples, rate = soundfile.read(DATA / CLIP, dtype="float32")
    assert rate == 16_000
    return samples


@pytest.fixture(scope="module")
def encoder() -> WhisperEncoder:
    from faster_whisper import WhisperModel

    # The way the server would share it: the WhisperModel its ASR already loaded.
    return WhisperEncoder(WhisperModel(models.whisper_model(None), device="cpu", compute_type="int8", cpu_threads=2),
                          name="faster-whisper:bundled")


@pytest.fixture(scope="module")
def context():
    context = EmbeddingContext(models.gguf_model(None), n_ctx=512, n_batch=8)  # small batches: prompts take several
    yield context
    context.close()


def test_embeddings_reproduce_the_token_path(context):
    pytest.importorskip("gguf")
    matrix = token_embedding_matrix(models.gguf_model(None))
    assert matrix.shape == (context.n_vocab, context.n_embd)
    before, after = prompt_texts([ChatMessage("system", "Answer in one short sentence.")])
    tokens = context.tokenize(before + "What is the capital of France?" + after)
    assert len(tokens) > 3 * context.n_batch

    def run(pieces) -> tuple[np.ndarray, list[int]]:
        context.reset()
        context.feed(pieces)
        return context.logits(), list(context.generate(12))

    by_tokens = run([tokens])
    by_embeddings = run([matrix[tokens]])
    mixed = run([tokens[:5], matrix[tokens[5:20]], tokens[20:]])  # text, "audio", text: the native prompt's shape
    assert len(by_tokens[1]) >= 6
    for logits, generated in (by_embeddings, mixed):
        assert generated == by_tokens[1]
        np.testing.assert_allclose(logits, by_tokens[0], atol=0.05)
        assert logits.argmax() == by_tokens[0].argmax()

    # A new prompt keeps the KV cache of the leading tokens it shares with the previous one.
    context.reset()
    assert context.start([tokens[:20], matrix[tokens[20:]]]) == 0
    assert list(context.generate(12)) == by_tokens[1]
    assert context.start([tokens[:20], matrix[tokens[20:]]]) == len(tokens) - 1  # the rows too, but the last
    assert list(context.generate(12)) == by_tokens[1]
    assert context.start([tokens]) == 20
    np.testing.assert_allclose(context.logits(), by_tokens[0], atol=0.05)
    assert list(context.generate(12)) == by_tokens[1]


def test_text_around_embeddings_is_decoded_with_them_in_one_batch(context):
    lookup = TokenEmbeddings(models.gguf_model(None))
    assert lookup([5, 9]).shape == (2, context.n_embd)
    with pytest.raises(ValueError, match="token ids"):
        lookup([context.n_vocab])
    before, after = prompt_texts([ChatMessage("system", "Answer in one short sentence.")])
    head, question, tail = (context.tokenize(text) for text in (before, "What is the capital of France?", after))
    context.reset()
    context.start([head, lookup(question), tail])  # three decode calls
    reference = context.logits(), list(context.generate(12))

    one_batch = EmbeddingContext(models.gguf_model(None), n_ctx=512, embed=lookup)
    decoded: list[int] = []
    original = one_batch._decode
    one_batch._decode = lambda batch, n: (decoded.append(n), original(batch, n))[1]
    try:
        one_batch.start([head])
        decoded.clear()
        assert one_batch.start([head, lookup(question), tail]) == len(head)  # the cached head is kept
        assert decoded == [len(question) + len(tail)]  # question and tail in one call
        np.testing.assert_allclose(one_batch.logits(), reference[0], atol=0.05)
        assert list(one_batch.generate(12)) == reference[1]

        def broken(tokens):
            raise LLMError("no such tensor")

        one_batch.embed = broken  # a lookup that fails: the text is decoded as tokens, as before
        one_batch.start([head])
        decoded.clear()
        one_batch.start([head, lookup(question), tail])
        assert decoded == [len(question), len(tail)] and one_batch.embed is None
        assert list(one_batch.generate(12)) == reference[1]
    finally:
        one_batch.close()
    loading = TokenEmbeddings(models.gguf_model(None), background=True)  # read in a thread, waited for
    np.testing.assert_array_equal(loading(question), lookup(question))


@pytest.mark.training
def test_batched_greedy_replies_match_one_at_a_time_and_keep_sequences_apart(context):
    from training.batch_generate import BatchedGreedy

    before, after = prompt_texts([ChatMessage("system", "Answer in one short sentence.")])
    prompts = [context.tokenize(before + question + after)
               for question in ("What is the capital of France?", "Name a colour.", "What is two plus two?")]
    reference = []
    for prompt in prompts:  # the path the server's native model takes, one prompt at a time
        context.reset()
        context.feed([prompt])
        reference.append(list(context.generate(10)))

    single = BatchedGreedy(models.gguf_model(None), n_seq=1, seq_ctx=256)
    assert [reply.ids for reply in single.generate(prompts, 10)] == reference
    single.close()

    batched = BatchedGreedy(models.gguf_model(None), n_seq=4, seq_ctx=256)
    # A group of four with the shared system prompt decoded once and copied, then a group of one.
    replies = batched.generate([prompts[0], prompts[1], prompts[0], prompts[2], prompts[1]], 10)
    assert replies[0] == replies[2]  # the same prompt twice in one batch: the sequences do not see each other
    assert all(0 < len(reply.ids) <= 10 and batched.detokenize(reply.ids).strip() for reply in replies)
    capped = batched.generate(prompts, 2)
    assert all(len(reply.ids) == 2 and not reply.finished for reply in capped)  # stopped by the limit
    with pytest.raises(ValueError, match="do not fit"):
        batched.generate([prompts[0]], 256)
    batched.close()


def test_encoder_gives_50_frames_a_second_without_padding(encoder, audio):
    features = encoder.encode(audio)
    seconds = audio.size / 16_000
    assert features.dtype == np.float32
    assert features.shape[1] == encoder.dim == 384
    assert abs(features.shape[0] - 50 * seconds) <= 2  # not 1500 frames (a padded 30 s window)
    assert encoder.encode(audio[:16_000]).shape == (50, 384)


def test_projector_stacks_frames_and_saves(tmp_path):
    features = np.arange(10 * 3, dtype=np.float32).reshape(10, 3)
    stacked = stack_frames(features, 4)
    assert stacked.shape == (3, 12)
    np.testing.assert_array_equal(stacked[0], features[:4].reshape(-1))
    np.testing.assert_array_equal(stacked[2], np.concatenate([features[8:].reshape(-1), np.zeros(6)]))

    projector = NumpyProjector.init(ProjectorConfig(hidden_dim=32), seed=3)
    path = projector.save(tmp_path / "p.npz")
    assert json.loads(path.with_suffix(".json").read_text())["stack"] == 4
    loaded = NumpyProjector.load(path)
    encoded = np.random.default_rng(0).standard_normal((150, 384)).astype(np.float32)
    assert loaded(encoded).shape == (38, 576)
    np.testing.assert_array_equal(loaded(encoded), projector(encoded))


@pytest.mark.training
@pytest.mark.parametrize("activation", ["gelu_tanh", "silu"])
def test_numpy_projector_matches_torch(activation):
    torch = pytest.importorskip("torch")
    from training.train import TorchProjector

    projector = NumpyProjector.init(ProjectorConfig(hidden_dim=256, activation=activation), seed=1)
    module = TorchProjector.from_numpy(projector)
    features = np.random.default_rng(1).standard_normal((151, 384)).astype(np.float32)
    with torch.no_grad():
        expected = module(module.stack(torch.from_numpy(features))).numpy()
    np.testing.assert_allclose(projector(features), expected, atol=1e-4, rtol=1e-4)
    np.testing.assert_array_equal(module.to_numpy().weights["w1"], projector.weights["w1"])


def test_stream_reply_stops_when_cancelled(encoder, audio):
    chat = NativeAudioChat(NumpyProjector.init(ProjectorConfig(hidden_dim=64)), encoder=encoder)
    options = GenerationOptions(max_tokens=40, temperature=0.0)
    cancel = threading.Event()
    cancel.set()
    assert list(chat.stream_reply(audio, [], options, cancel)) == []
    cancel = threading.Event()
    deltas = []
    for delta in chat.stream_reply(audio, [], options, cancel):
        deltas.append(delta)
        cancel.set()
    assert len(deltas) == 1
    chat.close()


def test_native_decodes_run_on_the_compute_thread(encoder, audio, monkeypatch):
    """The native contexts' decodes go to the same single thread as the cascade's
    (voice/llm/compute_thread.py), whichever worker streams the reply."""
    from concurrent.futures import ThreadPoolExecutor

    import llama_cpp

    threads = record_decodes(monkeypatch, llama_cpp)
    chat = NativeAudioChat(NumpyProjector.init(ProjectorConfig(hidden_dim=64)), encoder=encoder)
    options = GenerationOptions(max_tokens=6, temperature=0.0)
    with ThreadPoolExecutor(2, thread_name_prefix="worker") as pool:
        pool.submit(chat.prefill, [], threading.Event(), audio[: len(audio) // 2]).result()
        for _ in range(2):
            pool.submit(lambda: list(chat.stream_reply(audio, [], options, threading.Event()))).result()
    chat.close()
    assert len(threads) >= 4
    assert set(threads) == {"llama-compute"}


@pytest.mark.slow
def test_a_native_conversation_goes_back_to_the_context_that_holds_it(encoder, audio):
    chat = NativeAudioChat(NumpyProjector.init(ProjectorConfig(hidden_dim=64)), encoder=encoder, parallel=2)
    options = GenerationOptions(max_tokens=4, temperature=0.0)
    system = ChatMessage("system", "You are a voice assistant.")
    chat.warm([system])
    warmed = len(chat._tokenizer.tokenize(prompt_texts([system])[0]))
    assert all(context.cached_prefix(context._cached) == warmed for context in chat._pool._free)
    # The KV cache holds a turn's audio, and the history holds its transcript: a conversation's
    # cached part ends where its last user turn begins, and what is before that is reused.
    history = [system]
    for said in ("hello", "turn on the lamp"):
        reply = "".join(chat.stream_reply(audio, history, options, threading.Event()))
        history = [*history, ChatMessage("user", said), ChatMessage("assistant", reply or "ok")]
    holder = chat._pool._free[-1]  # the context that served the second turn, now idle the shortest
    third = "".join(chat.stream_reply(audio, history, options, threading.Event()))
    before = chat._tokenizer.tokenize(prompt_texts(history)[0])
    assert holder.cached_prefix(before) == len(before)  # it served the third turn too

    # While the user speaks, the history is evaluated ahead: the reply then decodes only the audio.
    history = [*history, ChatMessage("user", "and the kitchen"), ChatMessage("assistant", third or "ok")]
    before = chat._tokenizer.tokenize(prompt_texts(history)[0])
    chat.prefill(history, threading.Event())
    assert holder.cached_prefix(before) == len(before)
    decoded: list[int] = []
    original = holder._decode
    holder._decode = lambda batch, n: (decoded.append(n), original(batch, n))[1]
    prefilled = "".join(chat.stream_reply(audio, history, options, threading.Event()))
    assert decoded[0] == len(chat.audio_embeddings(audio)) + len(holder.tokenize(prompt_texts(history)[1]))
    holder.reset()
    assert "".join(chat.stream_reply(audio, history, options, threading.Event())) == prefilled  # as without
    free, chat._pool._free[:] = list(chat._pool._free), []
    chat.prefill([system, ChatMessage("user", "new")], threading.Event())  # every context busy: skipped
    chat._pool._free[:] = free
    chat.close()


@pytest.mark.slow
def test_rows_decoded_before_are_kept_when_a_prompt_goes_on_with_them(context):
    lookup = TokenEmbeddings(models.gguf_model(None))
    before, after = prompt_texts([ChatMessage("system", "Answer in one short sentence.")])
    head, tail = context.tokenize(before), context.tokenize(after)
    rows = lookup(context.tokenize("What is the capital of France?"))  # stands for projected audio
    context.reset()
    context.start([head, rows, tail])
    reference = context.logits(), list(context.generate(12))
    decoded: list[int] = []
    original = context._decode
    context._decode = lambda batch, n: (decoded.append(n), original(batch, n))[1]
    try:
        context.reset()
        context.start([head, rows[:4]])  # the speech so far, evaluated early
        np.testing.assert_array_equal(context.cached_embeddings(head), rows[:4])
        assert len(context.cached_embeddings(head[:-1])) == 0  # rows count only after exactly those tokens
        decoded.clear()
        assert context.start([head, rows, tail]) == len(head) + 4
        assert sum(decoded) == len(rows) - 4 + len(tail)
        np.testing.assert_allclose(context.logits(), reference[0], atol=0.05)
        assert list(context.generate(12)) == reference[1]
        changed = rows.copy()
        changed[6] += 0.01  # rows that differ from the cached ones are decoded again, from there
        decoded.clear()
        assert context.start([head, changed, tail]) == len(head) + 6
        assert sum(decoded) == len(rows) - 6 + len(tail)
        context.start([head, rows])
        decoded.clear()
        assert context.start([head, rows]) == len(head) + len(rows) - 1  # the last one is decoded for its logits
        assert decoded == [1]
    finally:
        context._decode = original


@pytest.mark.slow
def test_with_a_tolerance_rows_near_the_decoded_ones_are_kept_as_they_were(context):
    lookup = TokenEmbeddings(models.gguf_model(None))
    head = context.tokenize(prompt_texts([ChatMessage("system", "Answer in one short sentence.")])[0])
    rows = lookup(context.tokenize("What is the capital of France?"))
    context.reset()
    context.start([head, rows])
    moved = rows.copy()
    moved[:5] *= 1.05  # 5% away: kept
    moved[5] *= 1.5  # 50% away: decoded again, and every row after it
    decoded: list[int] = []
    original = context._decode
    context._decode = lambda batch, n: (decoded.append(n), original(batch, n))[1]
    try:
        assert context.start([head, moved], tolerance=0.1) == len(head) + 5
        assert sum(decoded) == len(rows) - 5
        held = context.cached_embeddings(head)  # what the KV cache holds: the kept rows as they were
        np.testing.assert_array_equal(held[:5], rows[:5])
        np.testing.assert_array_equal(held[5:], moved[5:])
        decoded.clear()
        assert context.start([head, moved], tolerance=0.0) == len(head)  # exact: the kept rows 0-4 differ
        assert sum(decoded) == len(rows)
    finally:
        context._decode = original


@pytest.mark.slow
def test_with_a_reuse_tolerance_the_margin_is_evaluated_tentatively_and_kept_when_near(encoder, audio,
                                                                                       monkeypatch):
    from voice.native import model

    monkeypatch.setattr(model, "AUDIO_REUSE_TOLERANCE", 1e6)  # every tentative row is near enough
    chat = NativeAudioChat(NumpyProjector.init(ProjectorConfig(hidden_dim=64)), encoder=encoder, parallel=1)
    history = [ChatMessage("system", "You are a voice assistant.")]
    before = chat._tokenizer.tokenize(prompt_texts(history)[0])
    tail = len(chat._tokenizer.tokenize(prompt_texts(history)[1]))
    step = 8_000
    for end in range(step, audio.size, step):
        chat.prefill(history, threading.Event(), audio_16k=audio[:end])
    holder = chat._pool._free[0]
    spoken = audio[: (audio.size - 1) // step * step]
    evaluated = holder.cached_embeddings(before).copy()
    # Every complete position of the speech so far is evaluated; only those before the margin are final.
    assert len(evaluated) == (spoken.size // 320 - 1) // 4
    assert chat._sources[holder][1] == (len(encoder.encode(spoken)) - int(model.AUDIO_MARGIN_S * 50)) // 4
    assert chat._sources[holder][1] < len(evaluated)
    decoded: list[int] = []
    original = holder._decode
    holder._decode = lambda batch, n: (decoded.append(n), original(batch, n))[1]
    "".join(chat.stream_reply(audio, history, GenerationOptions(max_tokens=2, temperature=0.0), threading.Event()))
    whole = chat.audio_embeddings(audio)
    assert decoded[0] == len(whole) - len(evaluated) + tail  # the tentative rows were kept
    rows = holder.cached_embeddings(before)
    np.testing.assert_array_equal(rows[:len(evaluated)], evaluated)
    assert len(rows) == len(whole)
    chat.close()


def test_the_speech_is_evaluated_while_the_user_speaks(encoder, audio):
    from voice.native.model import AUDIO_MARGIN_S

    chat = NativeAudioChat(NumpyProjector.init(ProjectorConfig(hidden_dim=64)), encoder=encoder, parallel=2)
    options = GenerationOptions(max_tokens=6, temperature=0.0)
    history = [ChatMessage("system", "You are a voice assistant.")]
    before = chat._tokenizer.tokenize(prompt_texts(history)[0])
    tail = len(chat._tokenizer.tokenize(prompt_texts(history)[1]))
    half_second = 8_000
    for end in range(half_second, audio.size, half_second):  # what the session sends while the user speaks
        chat.prefill(history, threading.Event(), audio_16k=audio[:end])
    holder = max(chat._pool._free, key=lambda context: len(context.cached_embeddings(before)))
    held = len(holder.cached_embeddings(before))
    spoken = audio[: (audio.size - 1) // half_second * half_second]
    assert held == (len(encoder.encode(spoken)) - int(AUDIO_MARGIN_S * 50)) // 4 > 0
    whole = chat.audio_embeddings(audio)
    positions = len(whole)
    held_rows = holder.cached_embeddings(before).copy()
    decoded: list[int] = []
    original = holder._decode
    holder._decode = lambda batch, n: (decoded.append(n), original(batch, n))[1]
    projector, projected = chat.projector, []

    class Projector:  # counts the frames projected
        config = projector.config

        def __call__(self, frames: np.ndarray) -> np.ndarray:
            projected.append(len(frames))
            return projector(frames)

    chat.projector = Projector()
    early = "".join(chat.stream_reply(audio, history, options, threading.Event()))
    chat.projector = projector
    assert decoded[0] == positions - held + tail  # only the audio after what was evaluated, and the tail
    assert projected == [len(encoder.encode(audio)) - 4 * held]  # and only that audio is projected
    rows = holder.cached_embeddings(before)
    assert np.array_equal(rows[:held], held_rows) and np.allclose(rows[held:], whole[held:], atol=1e-5)
    assert early  # (these projector weights are random: the reply is some text, not an answer)

    # Speech of another turn is not taken for this one: its rows are all evaluated.
    other = audio[::-1].copy()
    for context in chat._pool._free:
        context.reset()
    chat.prefill(history, threading.Event(), audio_16k=audio[: 2 * half_second + half_second])
    holder = max(chat._pool._free, key=lambda context: len(context.cached_embeddings(before)))
    assert len(holder.cached_embeddings(before)) > 0
    original = holder._decode
    holder._decode = lambda batch, n: (decoded.append(n), original(batch, n))[1]
    decoded.clear()
    "".join(chat.stream_reply(other, history, options, threading.Event()))
    assert decoded[0] == len(chat.audio_embeddings(other)) + tail
    chat.close()


@pytest.mark.slow
def test_with_a_left_context_the_encoder_sees_only_the_audio_near_the_positions_it_computes(encoder, audio,
                                                                                           monkeypatch):
    from voice.native import model

    left = 0.5
    monkeypatch.setattr(model, "ENCODER_LEFT_CONTEXT_S", left)
    chat = NativeAudioChat(NumpyProjector.init(ProjectorConfig(hidden_dim=64)), encoder=encoder, parallel=1)
    seen: list[int] = []

    class Encoder:  # records how much audio each encoding is given
        dim = encoder.dim

        def encode(self, audio_16k: np.ndarray) -> np.ndarray:
            seen.append(audio_16k.size)
            return encoder.encode(audio_16k)

    chat.encoder = Encoder()
    history = [ChatMessage("system", "You are a voice assistant.")]
    before = chat._tokenizer.tokenize(prompt_texts(history)[0])
    step = 4_000
    for end in range(step, audio.size, step):
        chat.prefill(history, threading.Event(), audio_16k=audio[:end])
    held = len(chat._pool._free[0].cached_embeddings(before))
    # Each time: the left context, then the audio after the positions held (the margin and a step).
    most = int((left + model.AUDIO_MARGIN_S) * 16_000) + step + 2 * 1280  # (windows start on a position)
    assert held > 0 and max(seen) <= most < audio.size
    whole = chat.audio_embeddings(audio)
    seen.clear()
    options = GenerationOptions(max_tokens=2, temperature=0.0)
    "".join(chat.stream_reply(audio, history, options, threading.Event()))
    assert len(seen) == 1 and seen[0] <= most  # the reply too
    rows = chat._pool._free[0].cached_embeddings(before)
    assert rows.shape == whole.shape  # every position, the held ones as they were
    chat.close()


@pytest.mark.slow
@pytest.mark.parametrize("margin", [0.5, 1.0])
def test_streamed_states_are_what_the_reply_evaluates_after_the_speech_was_evaluated_while_spoken(
        encoder, audio, margin, monkeypatch):
    from voice.blas import one_blas_thread
    from voice.native import model
    from voice.native.early_encoding import streamed_states
    from voice.turn_taking import EVALUATE_EVERY_MS

    monkeypatch.setattr(model, "AUDIO_MARGIN_S", margin)
    chat = NativeAudioChat(NumpyProjector.init(ProjectorConfig(hidden_dim=64)), encoder=encoder, parallel=1)
    history = [ChatMessage("system", "You are a voice assistant.")]
    before = chat._tokenizer.tokenize(prompt_texts(history)[0])
    step = EVALUATE_EVERY_MS * 16
    for end in range(step, audio.size, step):  # what the session sends while the user speaks
        chat.prefill(history, threading.Event(), audio_16k=audio[:end])
    rows, held, _ = chat._reply_rows(chat._pool._free[0], before, audio)
    with one_blas_thread():  # as the server encodes (int8 kernels round BLAS-thread-dependent features apart)
        states, early = streamed_states(encoder.encode, audio, margin_s=margin, stack=4,
                                        left_context_s=model.ENCODER_LEFT_CONTEXT_S)
    assert early == held > 0 and len(states) == len(encoder.encode(audio))
    assert np.allclose(chat.projector(states), rows, atol=1e-5)  # the rows the server's reply evaluates
    assert not np.allclose(states[: 4 * early], encoder.encode(audio)[: 4 * early], atol=1e-3)  # not the whole turn's
    chat.close()


@pytest.mark.training
def test_training_end_to_end(tmp_path, encoder, audio, capsys):
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from training import data, train

    data_dir, run = tmp_path / "data", tmp_path / "run"
    data.main(["--count", "3", "--out", str(data_dir), "--reply-max-tokens", "12"])
    data.main(["--count", "4", "--out", str(data_dir), "--reply-max-tokens", "12"])  # completes the set
    examples = data.load_manifest(data_dir)
    assert [example["id"] for example in examples] == ["000000", "000001", "000002", "000003"]
    assert len((data_dir / "replies.jsonl").read_text().splitlines()) == 4  # each reply generated once
    for example in examples:
        features = data.load_features(data_dir, example)
        assert features.shape[1] == 384 and abs(features.shape[0] - 50 * example["seconds"]) <= 2
        assert example["reply"] and len(example["reply_ids"]) <= 12

    # A second set: plain sentences (repeat only) in every voice and augmentation.
    sentences_dir = tmp_path / "sentences"
    data.main(["--count", "0", "--sentences", "3", "--out", str(sentences_dir), "--flite-share", "0.5",
               "--reverb-share", "1", "--eq-share", "1", "--band-share", "1",
               "--holdout", str(DATA / "manifest.tsv")])
    sentences = data.load_manifest(sentences_dir)
    assert [example["task"] for example in sentences] == ["repeat"] * 3
    assert all(example["reply_ids"] is None and "rt60_s" in example["augmentation"] for example in sentences)

    common = ["--data-dir", str(data_dir), str(sentences_dir), "--out", str(run), "--batch-size", "2",
              "--checkpoint-every", "1", "--val-fraction", "0.3", "--warmup", "1", "--hidden-dim", "128"]
    # In two child processes of one step each, the second resuming the first's checkpoint.
    subprocess.run([sys.executable, "-m", "training.train", *common, "--steps", "2", "--segment-steps", "1"],
                   cwd=ROOT, check=True)
    assert (run / "checkpoint.pt").is_file() and (run / "projector.json").is_file()
    train.main([*common, "--steps", "3", "--dtype", "bfloat16", "--keep-exports"])  # resumes at step 2, bfloat16
    assert (run / "projector-step3.npz").is_file() and not (run / "projector-step2.npz").is_file()
    log = [json.loads(line) for line in (run / "train_log.jsonl").read_text().splitlines()]
    assert [record["step"] for record in log] == [1, 2, 3]
    assert all(np.isfinite(record["loss"]) for record in log) and "val_reply" in log[-1]
    assert all(record["rss_gib"] > 0 for record in log)
    assert log[1]["lr"] == train.learning_rate(1, train.parser().parse_args([*common, "--steps", "2"]))
    capsys.readouterr()
    train.main([*common, "--steps", "3", "--evaluate-only"])  # the checkpoint's losses again, nothing trained
    evaluated = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert evaluated["step"] == 3 and evaluated["val_repeat"] == pytest.approx(log[-1]["val_repeat"], rel=0.05)
    assert len((run / "train_log.jsonl").read_text().splitlines()) == 3

    chat = NativeAudioChat(run / "projector.npz", encoder=encoder)
    assert chat.projector.config.hidden_dim == 128
    system = ChatMessage("system", "You are a friendly voice assistant.")
    reply = "".join(chat.stream_reply(audio, [system], GenerationOptions(max_tokens=8, temperature=0.0),
                                      threading.Event()))
    assert reply.strip()  # any text: a projector trained for three steps understands nothing
    assert isinstance(chat.transcribe(audio, max_tokens=8), str)
    chat.close()

    # With a LoRA of the LLM, from the projector above; exported with its llama.cpp adapter.
    lora_run = tmp_path / "lora-run"
    lora = ["--lora-rank", "2", "--lora-alpha", "4"]
    with_lora = [*common[:common.index("--out")], "--out", str(lora_run), *common[common.index("--out") + 2:], *lora]
    train.main([*with_lora, "--steps", "2", "--init", str(run / "projector.npz")])
    assert json.loads((lora_run / "projector.json").read_text())["adapter"] == "projector.lora.gguf"
    weights, alpha = read_adapter(lora_run / "projector.lora.gguf", n_head=9, n_head_kv=3)
    assert alpha == 4.0 and len(weights) == 30 * 7 and any(np.abs(b).max() > 0 for _, b in weights.values())
    train.main([*with_lora, "--steps", "3", "--keep-exports"])  # resumes at step 2, LoRA and all
    assert json.loads((lora_run / "projector-step3.json").read_text())["adapter"] == "projector-step3.lora.gguf"
    lora_log = [json.loads(line) for line in (lora_run / "train_log.jsonl").read_text().splitlines()]
    assert [record["step"] for record in lora_log] == [1, 2, 3]
    with pytest.raises(SystemExit, match="with a LoRA"):
        train.main([*with_lora[:-4], "--steps", "4"])  # resuming without --lora-rank
    capsys.readouterr()
    train.main([*with_lora, "--steps", "3", "--evaluate-only", "--restart", "--init",
                str(lora_run / "projector-step3.npz")])  # the exported adapter reads back into training
    evaluated = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert evaluated["val_repeat"] == pytest.approx(lora_log[-1]["val_repeat"], rel=0.05)
    with pytest.raises(SystemExit, match="--lora-rank"):
        train.main([*common, "--restart", "--steps", "1", "--init", str(lora_run / "projector.npz")])

    chat = NativeAudioChat(lora_run / "projector.npz", encoder=encoder)
    assert chat.projector.adapter == lora_run / "projector.lora.gguf"
    reply = "".join(chat.stream_reply(audio, [system], GenerationOptions(max_tokens=8, temperature=0.0),
                                      threading.Event()))
    assert reply.strip()
    chat.close()

    # The same sentences encoded padded to Whisper's window, as llama-server pads them, trained in
    # batches of their own; validation reports each layout.
    window_dir = tmp_path / "window"
    data.main(["--count", "0", "--sentences", "3", "--padded-window", "--out", str(window_dir),
               "--holdout", str(DATA / "manifest.tsv")])
    window = data.load_manifest(window_dir)
    assert [example["text"] for example in window] == [example["text"] for example in sentences]
    assert all(data.load_features(window_dir, example).shape == (1500, 384) for example in window)
    window_run = tmp_path / "window-run"
    train.main(["--data-dir", str(sentences_dir), str(window_dir), "--out", str(window_run), "--batch-size", "2",
                "--steps", "2", "--checkpoint-every", "2", "--val-fraction", "0.3", "--warmup", "1",
                "--hidden-dim", "128", "--window-share", "0.5"])
    record = json.loads((window_run / "train_log.jsonl").read_text().splitlines()[-1])
    assert np.isfinite(record["val_repeat"]) and np.isfinite(record["val_window_repeat"])

    # The same sentences encoded as the server evaluates speech while the user speaks.
    streamed_dir = tmp_path / "streamed"
    data.main(["--count", "0", "--sentences", "3", "--streamed-margins", "0.25", "0.5", "--out", str(streamed_dir),
               "--holdout", str(DATA / "manifest.tsv")])
    streamed = data.load_manifest(streamed_dir)
    assert [example["text"] for example in streamed] == [example["text"] for example in sentences]
    for example in streamed:  # every frame of the clip, the first ones as evaluated early
        assert example["streamed_margin_s"] in (0.25, 0.5) and example["early_positions"] > 0
        features = data.load_features(streamed_dir, example)
        assert features.shape[1] == 384 and abs(features.shape[0] - 50 * example["seconds"]) <= 2
    with pytest.raises(SystemExit, match="streamed_margins"):  # not completed with other encodings
        data.main(["--count", "0", "--sentences", "4", "--out", str(streamed_dir)])
    with pytest.raises(SystemExit):  # one encoding or the other
        data.main(["--count", "0", "--sentences", "1", "--streamed-margins", "0.5", "--padded-window",
                   "--out", str(tmp_path / "both")])
    assert not (tmp_path / "both").exists()


def test_a_transcript_is_capped_by_how_long_the_speech_was():
    assert transcript_token_cap(0.0, 96) == 8
    assert transcript_token_cap(2.4, 96) == 23  # "turn on the living room lamp" is 7 tokens
    assert transcript_token_cap(60.0, 96) == 96 and transcript_token_cap(1.0, 4) == 4


def test_a_looping_transcript_is_cut_after_its_first_copy():
    assert loop_start("what you please please please please".split()) == 3
    assert loop_start("he said two crowns, two crowns, two crowns,".split()) == 4
    assert loop_start("no no no".split()) is None  # a word said three times may be meant
    assert loop_start("turn on the living room lamp".split()) is None and loop_start([]) is None


def test_a_transcript_ends_at_its_first_line_break():
    # The stage-6 projector's transcript of one of the sonnet's lines (benchmarks/results/native_eval.json)
    said = "But, contracted to alone alone bright eyes.\n\nBREAKING THE COUNTRY,\n\nBREAKING THE"
    assert finished_transcript(said) == "But, contracted to alone alone bright eyes."
    assert finished_transcript("\nTurn on the living room lamp.") is None  # a leading line break is not an end
    assert finished_transcript("\nTurn on the living room lamp.\n") == "Turn on the living room lamp."
    assert finished_transcript("what you please please please please\nand") == "what you please"


@pytest.mark.training
def test_validation_holds_out_texts_in_every_voice() -> None:
    pytest.importorskip("torch")
    from training.train import split_by_text

    texts = [f"sentence number {n}" for n in range(50)]
    examples = [{"text": text} for text in texts] + [{"text": text.upper() + " "} for text in texts]  # a second voice
    train, val = split_by_text(examples, 0.1, seed=0)
    assert sorted(train + val) == list(range(100)) and len(val) == 10
    key = lambda index: examples[index]["text"].lower().strip()  # noqa: E731
    assert not {key(i) for i in train} & {key(i) for i in val}
    assert split_by_text(examples, 0.1, seed=0) == (train, val)
    assert split_by_text(examples[:1], 0.5, seed=0) == ([0], [])  # too few to hold any out: all train
