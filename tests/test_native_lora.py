"""The native path's LoRA: trained in torch (peft), exported as a llama.cpp adapter, applied by
llama.cpp in the native contexts alone, with the same effect on the model as in training."""

from __future__ import annotations

import numpy as np
import pytest

from voice import models
from voice.llm.base import ChatMessage, LLMError
from voice.native.adapter import adapter_rank, permute_rows, read_adapter, unpermute_rows, write_adapter
from voice.native.llama_embeddings import EmbeddingContext
from voice.native.merge import merged_model
from voice.native.model import prompt_texts
from voice.native.projector import NumpyProjector, ProjectorConfig

N_HEAD, N_HEAD_KV = 9, 3  # SmolLM2-135M


def random_lora(rank: int, scale: float, seed: int, layers: int = 2) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(seed)
    shapes = {"self_attn.q_proj": (576, 576), "self_attn.k_proj": (192, 576), "mlp.down_proj": (576, 1536)}
    return {f"model.layers.{layer}.{module}": (rng.normal(0, scale, (rank, n_in)).astype(np.float32),
                                               rng.normal(0, scale, (n_out, rank)).astype(np.float32))
            for layer in range(layers) for module, (n_out, n_in) in shapes.items()}


def test_rows_permute_as_llama_cpp_stores_queries_and_keys():
    rows = np.arange(2 * 8, dtype=np.float32).reshape(-1, 1)  # two heads of 8 rows
    permuted = permute_rows(rows, 2)[:, 0]
    # Per head, the first half's rows and the second half's interleave.
    assert permuted.tolist() == [0, 4, 1, 5, 2, 6, 3, 7, 8, 12, 9, 13, 10, 14, 11, 15]
    np.testing.assert_array_equal(unpermute_rows(permute_rows(rows, 2), 2), rows)


def test_an_adapter_file_reads_back_as_it_was_written(tmp_path):
    gguf = pytest.importorskip("gguf")
    weights = random_lora(rank=4, scale=0.1, seed=0)
    path = write_adapter(tmp_path / "a.gguf", weights, alpha=8.0, n_head=N_HEAD, n_head_kv=N_HEAD_KV,
                         dtype=np.float32)
    back, alpha = read_adapter(path, n_head=N_HEAD, n_head_kv=N_HEAD_KV)
    assert alpha == 8.0 and adapter_rank(back) == 4 and set(back) == set(weights)
    for name, (a, b) in weights.items():
        np.testing.assert_array_equal(back[name][0], a)
        np.testing.assert_array_equal(back[name][1], b)
    # What llama.cpp reads: an adapter file, lora_a with the input dimension innermost.
    reader = gguf.GGUFReader(str(path))
    tensors = {tensor.name: tensor for tensor in reader.tensors}
    assert list(tensors["blk.1.ffn_down.weight.lora_a"].shape) == [1536, 4]
    assert list(tensors["blk.1.ffn_down.weight.lora_b"].shape) == [4, 576]
    stored_q = np.asarray(tensors["blk.0.attn_q.weight.lora_b"].data).reshape(576, 4)
    np.testing.assert_array_equal(stored_q, permute_rows(weights["model.layers.0.self_attn.q_proj"][1], N_HEAD))

    with pytest.raises(ValueError, match="not a LoRA-adaptable"):
        write_adapter(tmp_path / "b.gguf", {"lm_head": weights["model.layers.0.mlp.down_proj"]}, alpha=8.0,
                      n_head=N_HEAD, n_head_kv=N_HEAD_KV)


def test_a_projector_names_its_adapter_and_a_missing_one_is_a_clear_error(tmp_path):
    config = ProjectorConfig(hidden_dim=8, adapter="p.lora.gguf")
    saved = NumpyProjector.init(config).save(tmp_path / "p.npz")
    with pytest.raises(FileNotFoundError, match="p.lora.gguf"):
        NumpyProjector.load(saved)
    (tmp_path / "p.lora.gguf").write_bytes(b"")
    assert NumpyProjector.load(saved).adapter == tmp_path / "p.lora.gguf"
    plain = NumpyProjector.init(ProjectorConfig(hidden_dim=8)).save(tmp_path / "plain.npz")
    assert NumpyProjector.load(plain).adapter is None
    assert "adapter" not in (tmp_path / "plain.json").read_text()  # projectors without one read as before


@pytest.mark.training
def test_llama_cpp_applies_a_lora_as_it_was_trained(tmp_path):
    """The same random LoRA in torch (transformers + peft, the training side) and in llama.cpp (the
    exported adapter) moves the next-token logits the same way; with the query and key rows left in
    transformers' order it would not."""
    torch = pytest.importorskip("torch")
    pytest.importorskip("peft")
    from training import train
    from training.lora import lora_weights, set_lora_weights

    model_path = models.gguf_model(None)
    llm = train.load_llm(model_path, torch.float32, "cpu", 4, 8.0)
    plain = EmbeddingContext(model_path, n_ctx=256)
    before, after = prompt_texts([ChatMessage("system", "Answer in one short sentence.")])
    tokens = plain.tokenize(before + "What is the capital of France?" + after)

    def llama_logits(context: EmbeddingContext) -> np.ndarray:
        context.reset()
        context.feed([tokens])
        return context.logits()

    def torch_logits() -> np.ndarray:
        with torch.no_grad():
            return llm(torch.tensor([tokens])).logits[0, -1].float().numpy()

    base = llama_logits(plain)
    rng = np.random.default_rng(1)
    for only_qk, wanted in ((False, 0.98), (True, 0.95)):
        weights = {name: (rng.normal(0, 0.1, a.shape).astype(np.float32),
                          rng.normal(0, 0.1, b.shape).astype(np.float32)
                          * (not only_qk or name.endswith(("q_proj", "k_proj"))))
                   for name, (a, b) in lora_weights(llm).items()}
        set_lora_weights(llm, {name: (a, np.zeros_like(b)) for name, (a, b) in weights.items()})
        torch_base = torch_logits()
        set_lora_weights(llm, weights)
        torch_moved = torch_logits() - torch_base

        adapter = write_adapter(tmp_path / "lora.gguf", weights, alpha=8.0, n_head=N_HEAD, n_head_kv=N_HEAD_KV)
        adapted = EmbeddingContext(model_path, n_ctx=256, lora=adapter)
        llama_moved = llama_logits(adapted) - base
        adapted.close()
        assert np.corrcoef(torch_moved, llama_moved)[0, 1] > wanted
        assert (torch_base + torch_moved).argmax() == (base + llama_moved).argmax()

        unpermuted = write_adapter(tmp_path / "wrong.gguf", weights, alpha=8.0, n_head=1, n_head_kv=1)
        wrong = EmbeddingContext(model_path, n_ctx=256, lora=unpermuted)
        assert np.corrcoef(torch_moved, llama_logits(wrong) - base)[0, 1] < wanted - 0.05
        wrong.close()
    # The context without the adapter is untouched by the others (adapters are per context).
    np.testing.assert_array_equal(llama_logits(plain), base)

    # Merged into a copy of the weights (what the server runs), the LoRA does what the adapter does.
    merged_path = merged_model(models.llama_file(model_path), adapter, tmp_path / "cache")
    merged = EmbeddingContext(merged_path, n_ctx=256)
    merged_moved = llama_logits(merged) - base
    merged.close()
    assert np.corrcoef(merged_moved, llama_moved)[0, 1] > 0.98  # (the merged weights' Q8_0 rounding moves them too)
    assert (base + merged_moved).argmax() == (base + llama_moved).argmax()
    assert merged_model(models.llama_file(model_path), adapter, tmp_path / "cache") == merged_path  # made once
    assert merged_model(models.llama_file(model_path), unpermuted, tmp_path / "cache") != merged_path
    plain.close()
    set_lora_weights(llm, None)


def test_an_adapter_for_another_model_is_not_merged(tmp_path):
    pytest.importorskip("gguf")
    adapter = write_adapter(tmp_path / "a.gguf", {"model.layers.40.self_attn.q_proj": (
        np.zeros((2, 576), np.float32), np.zeros((576, 2), np.float32))}, alpha=2.0, n_head=N_HEAD, n_head_kv=N_HEAD_KV)
    with pytest.raises(ValueError, match="does not have"):
        merged_model(models.llama_file(models.gguf_model(None)), adapter, tmp_path / "cache")
    assert not list((tmp_path / "cache").iterdir())  # no copy, no temporary file left behind


def test_an_adapter_llama_cpp_cannot_use_is_a_clear_error(tmp_path):
    model_path = models.gguf_model(None)
    with pytest.raises(LLMError, match="not found"):
        EmbeddingContext(model_path, n_ctx=64, lora=tmp_path / "missing.gguf")
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"GGUF not really")
    with pytest.raises(LLMError, match="could not load the LoRA adapter"):
        EmbeddingContext(model_path, n_ctx=64, lora=bad)
    wrong_shape = write_adapter(tmp_path / "wrong-shape.gguf", {"model.layers.0.self_attn.q_proj": (
        np.zeros((2, 100), np.float32), np.zeros((576, 2), np.float32))}, alpha=2.0, n_head=N_HEAD, n_head_kv=N_HEAD_KV)
    with pytest.raises(LLMError, match="could not load the LoRA adapter"):
        EmbeddingContext(model_path, n_ctx=64, lora=wrong_shape)
