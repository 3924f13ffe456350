"""LoRA adapters of the native path's LLM as llama.cpp adapter files (GGUF), without torch.

Training (training/lora.py) adds low-rank updates B·A (scaled by alpha / rank) to the LLM's
linear layers, named as transformers names them; llama.cpp applies the same updates from a GGUF
of `general.type` "adapter": one `<tensor>.lora_a` (rank, in) and `<tensor>.lora_b` (out, rank)
per weight, named as llama.cpp names the base tensors.

One subtlety: llama.cpp's converter stores the query and key projections of "llama" models with
their rows permuted (rotary halves interleaved), and transformers undoes that when it loads a
GGUF. A LoRA trained in transformers' order therefore has the rows of its query and key `B`
permuted the same way in the file, and back when read.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

ARCHITECTURE = "llama"
MODULES = {
    "self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v",
    "self_attn.o_proj": "attn_output", "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up",
    "mlp.down_proj": "ffn_down",
}
"""transformers' module (after `model.layers.N.`) -> llama.cpp's tensor (after `blk.N.`)."""
TARGETS = tuple(name.rsplit(".", 1)[1] for name in MODULES)
"""The linear layers a LoRA adapts (by transformers' short names)."""

LoraWeights = dict[str, tuple[np.ndarray, np.ndarray]]
"""transformers module name (`model.layers.3.self_attn.q_proj`) -> (A (rank, in), B (out, rank))."""

_HF_NAME = re.compile(r"^model\.layers\.(\d+)\.(.+)$")
_GGUF_NAME = re.compile(r"^blk\.(\d+)\.(.+)\.weight\.lora_([ab])$")


def permute_rows(weights: np.ndarray, n_head: int) -> np.ndarray:
    """transformers' row order of a query/key projection -> llama.cpp's (per head, the two rotary
    halves interleaved), as llama.cpp's converter permutes them."""
    return weights.reshape(n_head, 2, weights.shape[0] // n_head // 2, *weights.shape[1:]) \
        .swapaxes(1, 2).reshape(weights.shape)


def unpermute_rows(weights: np.ndarray, n_head: int) -> np.ndarray:
    """The inverse of `permute_rows`."""
    return weights.reshape(n_head, weights.shape[0] // n_head // 2, 2, *weights.shape[1:]) \
        .swapaxes(1, 2).reshape(weights.shape)


def _heads(module: str, n_head: int, n_head_kv: int) -> int | None:
    """How many heads a module's rows are permuted over in the file (None: not permuted)."""
    return {"self_attn.q_proj": n_head, "self_attn.k_proj": n_head_kv}.get(module)


def write_adapter(path: str | Path, weights: LoraWeights, *, alpha: float, n_head: int, n_head_kv: int,
                  dtype: type = np.float16) -> Path:
    """Write a llama.cpp LoRA adapter for a "llama"-architecture GGUF model."""
    import gguf

    if not weights:
        raise ValueError("no LoRA weights to write")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = gguf.GGUFWriter(str(path), ARCHITECTURE)
    writer.add_type(gguf.GGUFType.ADAPTER)
    writer.add_string(gguf.Keys.Adapter.TYPE, "lora")
    writer.add_float32(gguf.Keys.Adapter.LORA_ALPHA, float(alpha))
    for name, (a, b) in sorted(weights.items()):
        match = _HF_NAME.match(name)
        if match is None or match.group(2) not in MODULES:
            raise ValueError(f"not a LoRA-adaptable module of a llama model: {name}")
        if a.ndim != 2 or b.ndim != 2 or a.shape[0] != b.shape[1]:
            raise ValueError(f"{name}: A {a.shape} and B {b.shape} are not (rank, in) and (out, rank)")
        heads = _heads(match.group(2), n_head, n_head_kv)
        if heads is not None:
            b = permute_rows(b, heads)
        tensor = f"blk.{match.group(1)}.{MODULES[match.group(2)]}.weight"
        writer.add_tensor(f"{tensor}.lora_a", np.ascontiguousarray(a, dtype=dtype))
        writer.add_tensor(f"{tensor}.lora_b", np.ascontiguousarray(b, dtype=dtype))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def read_llama_adapter(path: str | Path) -> tuple[dict[str, tuple[np.ndarray, np.ndarray]], float]:
    """An adapter file as llama.cpp reads it: base tensor name (`blk.0.attn_q.weight`) -> (A (rank,
    in), B (out, rank)) in float32, rows in the file's order; and alpha."""
    import gguf

    reader = gguf.GGUFReader(str(path))
    field = reader.get_field(gguf.Keys.Adapter.LORA_ALPHA)
    if reader.get_field(gguf.Keys.General.TYPE) is None or field is None:
        raise ValueError(f"{path} is not a LoRA adapter")
    alpha = float(field.parts[field.data[0]][0])
    halves: dict[str, dict[str, np.ndarray]] = {}
    for tensor in reader.tensors:
        match = _GGUF_NAME.match(tensor.name)
        if match is None:
            raise ValueError(f"{path}: unexpected tensor {tensor.name}")
        # GGUF lists dimensions innermost first; numpy's order is the reverse.
        data = np.asarray(tensor.data, dtype=np.float32).reshape(tuple(int(n) for n in reversed(tensor.shape)))
        halves.setdefault(f"blk.{match.group(1)}.{match.group(2)}.weight", {})[match.group(3)] = data
    for name, pair in halves.items():
        if set(pair) != {"a", "b"}:
            raise ValueError(f"{path}: {name} lacks lora_a or lora_b")
    return {name: (pair["a"], pair["b"]) for name, pair in halves.items()}, alpha


def read_adapter(path: str | Path, *, n_head: int, n_head_kv: int) -> tuple[LoraWeights, float]:
    """The weights (float32, transformers' names and row order) and alpha of an adapter file
    written by `write_adapter` (to train on from it)."""
    modules = {gguf_name: hf_name for hf_name, gguf_name in MODULES.items()}
    weights: LoraWeights = {}
    found, alpha = read_llama_adapter(path)
    for name, (a, b) in found.items():
        _, layer, tensor, _ = name.split(".")
        if tensor not in modules:
            raise ValueError(f"{path}: unexpected tensor {name}")
        heads = _heads(modules[tensor], n_head, n_head_kv)
        weights[f"model.layers.{layer}.{modules[tensor]}"] = (a, b if heads is None else unpermute_rows(b, heads))
    return weights, alpha


def adapter_rank(weights: LoraWeights) -> int:
    """The rank of a LoRA (all its modules share it)."""
    ranks = {a.shape[0] for a, _ in weights.values()}
    if len(ranks) != 1:
        raise ValueError(f"LoRA modules of several ranks: {sorted(ranks)}")
    return ranks.pop()
