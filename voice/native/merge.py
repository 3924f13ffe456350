"""The native path's LLM with its LoRA merged into the weights: a GGUF copy made once and cached.

llama.cpp can apply an adapter at run time, but as two more small matrix products beside every
adapted one, which slows the prompt and every token (`python -m benchmarks.native_adapter`
measures it). Merged, W + (alpha / rank)·B·A is stored once in place of W, and the model runs as
fast as without a LoRA. Adapted weights are
stored as Q8_0 (or kept in F32 / F16 when the model has them so); all other tensors and the
metadata are copied as they are.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import numpy as np

from voice.cache_file import file_identity, write_cached
from voice.native.adapter import read_llama_adapter

log = logging.getLogger(__name__)


def merged_model(model_file: Path, adapter: Path, directory: Path) -> Path:
    """The copy of `model_file` (the GGUF llama.cpp loads) with `adapter` merged in, made in
    `directory` the first time (a few seconds for the bundled model) and named by the model file
    (path, size, modification time: it is large, and read at every start otherwise) and the
    adapter's contents, so a new adapter or model makes a new copy. Several processes may ask at
    once: each writes its own temporary file and the last rename wins, with identical content."""
    key = hashlib.sha256(file_identity(model_file).encode() + _digest(adapter)).hexdigest()[:16]
    target = directory / f"{model_file.name.removesuffix('.gguf')}.lora-{key}.gguf"
    if target.is_file():
        return target
    write_cached(target, lambda path: merge(model_file, adapter, path))
    log.info("merged the LoRA adapter %s into %s: %s", adapter.name, model_file.name, target)
    return target


def merge(model_file: Path, adapter: Path, target: Path) -> None:
    """Write `model_file`'s GGUF to `target` with every tensor the adapter adapts merged."""
    import gguf

    lora, alpha = read_llama_adapter(adapter)
    reader = gguf.GGUFReader(str(model_file))
    architecture = reader.get_field(gguf.Keys.General.ARCHITECTURE)
    writer = gguf.GGUFWriter(str(target), bytes(architecture.parts[architecture.data[0]]).decode("utf-8"))
    for field in reader.fields.values():
        if field.name == gguf.Keys.General.ARCHITECTURE or field.name.startswith("GGUF."):
            continue  # the writer adds these itself
        kind = field.types[0]
        writer.add_key_value(field.name, field.contents(), kind,
                             sub_type=field.types[-1] if kind == gguf.GGUFValueType.ARRAY else None)
    tensors = []
    for tensor in reader.tensors:
        data, kind = tensor.data, tensor.tensor_type
        if tensor.name in lora:
            data, kind = _merged(tensor, *lora.pop(tensor.name), alpha)
        tensors.append(data)
        writer.add_tensor_info(tensor.name, data.shape, data.dtype, data.nbytes, kind)
    if lora:
        raise ValueError(f"{adapter} adapts tensors {model_file.name} does not have: {sorted(lora)[:3]}")
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    for data in tensors:
        writer.write_tensor_data(data, tensor_endianess=reader.endianess)
    writer.close()


def _merged(tensor, a: np.ndarray, b: np.ndarray, alpha: float) -> tuple[np.ndarray, object]:
    """A base tensor plus (alpha / rank)·B·A, quantized back (Q8_0 unless it was F32 or F16)."""
    from gguf import GGMLQuantizationType as Q
    from gguf import quants

    weights = quants.dequantize(tensor.data, tensor.tensor_type).astype(np.float32)
    if weights.shape != (b.shape[0], a.shape[1]):
        raise ValueError(f"{tensor.name}: LoRA of shape {(b.shape[0], a.shape[1])} for a weight of {weights.shape}")
    weights += (alpha / a.shape[0]) * (b @ a)
    kind = tensor.tensor_type if tensor.tensor_type in (Q.F32, Q.F16) else Q.Q8_0
    return quants.quantize(weights, kind), kind


def _digest(path: Path) -> bytes:
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").digest()
