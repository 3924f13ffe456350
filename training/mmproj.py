"""Export the native model's audio side (Whisper encoder + projector) as a llama.cpp mmproj GGUF.

With it, llama.cpp's own `llama-server` serves the native model over the OpenAI API, audio in
`input_audio` content parts (libmtmd), which is what `--native-url` talks to:

    llama-server -m SmolLM2.gguf --lora projector.lora.gguf --mmproj native-mmproj.gguf

libmtmd has no projector type of our exact shape, but its GLM-Edge audio type ("glma") computes
the same function when the encoder's final LayerNorm is moved into it: Whisper layers, then
LayerNorm (ours: the encoder's `ln_post`), stacking of `stack` frames, Linear, GELU, Linear. Two
things differ from the embedded path: the GELU is the erf form (ours is tanh's approximation:
they differ by under 1e-3), and llama.cpp pads every clip to Whisper's 30 s window, so the LLM
sees 375 audio positions plus the type's begin and end embeddings, not 12.5 a second of speech.
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import re
from pathlib import Path

import numpy as np

from training.ctranslate2_weights import float_weight, read_variables
from voice import models
from voice.cache_file import file_identity, write_cached
from voice.native.projector import NumpyProjector
from voice.native.token_embeddings import TokenEmbeddings

log = logging.getLogger(__name__)
PROJECTOR_TYPE = "glma"
BOUNDARY_TEXT = "\n"
"""Whose token embedding stands in for the begin- and end-of-audio embeddings that the glma type
adds around the audio (the embedded path adds none)."""
_LAYER_NORM_EPS = 1e-5  # Whisper's


def mmproj_file(projector_path: Path, directory: Path, *, whisper: str | None = None,
                llm: str | None = None) -> Path:
    """The mmproj GGUF for a projector, exported into `directory` the first time and named by the
    contents of the projector and the encoder's weights and by the LLM file (whose newline embedding
    it holds), so any of them changing makes a new one."""
    model_bin = Path(models.whisper_model(whisper)) / "model.bin"
    llm_file = models.llama_file(models.gguf_model(llm))
    digest = hashlib.sha256()
    for path in (projector_path, projector_path.with_suffix(".json"), model_bin):
        with open(path, "rb") as handle:
            digest.update(hashlib.file_digest(handle, "sha256").digest())
    digest.update(file_identity(llm_file).encode())
    target = directory / f"native-mmproj-{digest.hexdigest()[:16]}.gguf"
    if target.is_file():
        return target
    write_cached(target, lambda path: export_mmproj(NumpyProjector.load(projector_path), model_bin, llm_file, path))
    log.info("exported the native model's mmproj for llama.cpp: %s", target)
    return target


def export_mmproj(projector: NumpyProjector, whisper_model_bin: Path, llm_file: Path, target: Path) -> None:
    """Write the mmproj GGUF of `projector` over the Whisper encoder in `whisper_model_bin`."""
    import gguf

    spec, variables = read_variables(whisper_model_bin)
    if spec != "WhisperSpec":
        raise ValueError(f"{whisper_model_bin} is a {spec}, not a Whisper model")
    config = projector.config
    conv1 = variables["encoder/conv1/weight"]
    n_layers = sum(1 for name in variables if re.fullmatch(r"encoder/layer_\d+/ffn/linear_0/weight", name))
    dim = conv1.shape[0]
    if dim != config.encoder_dim:
        raise ValueError(f"the projector takes {config.encoder_dim}-wide encoder states, the encoder makes {dim}")
    boundary = _boundary_embedding(llm_file, config.llm_dim)

    writer = gguf.GGUFWriter(str(target), "clip")
    writer.add_string("general.name", "voice-server native audio (Whisper encoder + projector)")
    writer.add_bool("clip.has_audio_encoder", True)
    writer.add_bool("clip.has_vision_encoder", False)
    writer.add_string("clip.projector_type", PROJECTOR_TYPE)
    writer.add_uint32("clip.audio.embedding_length", dim)
    writer.add_uint32("clip.audio.feed_forward_length", variables["encoder/layer_0/ffn/linear_0/weight"].shape[0])
    writer.add_uint32("clip.audio.block_count", n_layers)
    writer.add_uint32("clip.audio.attention.head_count", int(variables["encoder/num_heads"]))
    writer.add_float32("clip.audio.attention.layer_norm_epsilon", _LAYER_NORM_EPS)
    writer.add_uint32("clip.audio.projection_dim", config.llm_dim)
    writer.add_uint32("clip.audio.num_mel_bins", conv1.shape[1])
    writer.add_uint32("clip.audio.projector.stack_factor", config.stack)

    def f32(name: str) -> np.ndarray:
        return variables[name].astype(np.float32)

    tensors: dict[str, np.ndarray] = {
        "a.conv1d.1.weight": float_weight(variables, "encoder/conv1/weight").astype(np.float16),
        "a.conv1d.1.bias": f32("encoder/conv1/bias").reshape(dim, 1),
        "a.conv1d.2.weight": float_weight(variables, "encoder/conv2/weight").astype(np.float16),
        "a.conv1d.2.bias": f32("encoder/conv2/bias").reshape(dim, 1),
        "a.position_embd.weight": f32("encoder/position_encodings/encodings"),
        # the encoder's final LayerNorm, applied by the glma projector before it stacks frames
        "mm.a.norm_pre.weight": f32("encoder/layer_norm/gamma"),
        "mm.a.norm_pre.bias": f32("encoder/layer_norm/beta"),
        "mm.a.mlp.1.weight": np.ascontiguousarray(projector.weights["w1"].T),
        "mm.a.mlp.1.bias": projector.weights["b1"],
        "mm.a.mlp.2.weight": np.ascontiguousarray(projector.weights["w2"].T),
        "mm.a.mlp.2.bias": projector.weights["b2"],
        "v.boi": boundary,
        "v.eoi": boundary.copy(),
    }
    for layer in range(n_layers):
        tensors.update(_layer_tensors(variables, layer, dim))
    for name, array in tensors.items():
        writer.add_tensor(name, np.ascontiguousarray(array))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def _layer_tensors(variables: dict[str, np.ndarray], layer: int, dim: int) -> dict[str, np.ndarray]:
    """One Whisper encoder layer, renamed; CTranslate2's fused QKV is split (Whisper's K has no bias)."""
    source = f"encoder/layer_{layer}"
    target = f"a.blk.{layer}"
    qkv = float_weight(variables, f"{source}/self_attention/linear_0/weight")
    qkv_bias = variables[f"{source}/self_attention/linear_0/bias"].astype(np.float32)
    tensors = {
        f"{target}.ln1.weight": variables[f"{source}/self_attention/layer_norm/gamma"],
        f"{target}.ln1.bias": variables[f"{source}/self_attention/layer_norm/beta"],
        f"{target}.attn_q.weight": qkv[:dim],
        f"{target}.attn_q.bias": qkv_bias[:dim],
        f"{target}.attn_k.weight": qkv[dim:2 * dim],
        f"{target}.attn_v.weight": qkv[2 * dim:],
        f"{target}.attn_v.bias": qkv_bias[2 * dim:],
        f"{target}.attn_out.weight": float_weight(variables, f"{source}/self_attention/linear_1/weight"),
        f"{target}.attn_out.bias": variables[f"{source}/self_attention/linear_1/bias"],
        f"{target}.ln2.weight": variables[f"{source}/ffn/layer_norm/gamma"],
        f"{target}.ln2.bias": variables[f"{source}/ffn/layer_norm/beta"],
        f"{target}.ffn_up.weight": float_weight(variables, f"{source}/ffn/linear_0/weight"),
        f"{target}.ffn_up.bias": variables[f"{source}/ffn/linear_0/bias"],
        f"{target}.ffn_down.weight": float_weight(variables, f"{source}/ffn/linear_1/weight"),
        f"{target}.ffn_down.bias": variables[f"{source}/ffn/linear_1/bias"],
    }
    # matrices stay float16 as CTranslate2 stores them; norms and biases are float32 for ggml's adds
    return {name: array.astype(np.float16 if array.ndim == 2 else np.float32) for name, array in tensors.items()}


def _boundary_embedding(llm_file: Path, llm_dim: int) -> np.ndarray:
    from llama_cpp import Llama

    llm = Llama(str(llm_file), vocab_only=True, verbose=False)
    try:
        tokens = llm.tokenize(BOUNDARY_TEXT.encode(), add_bos=False, special=False)
    finally:
        llm.close()
    if len(tokens) != 1:
        raise ValueError(f"{BOUNDARY_TEXT!r} is {len(tokens)} tokens for {llm_file.name}, not one")
    embedding = TokenEmbeddings(llm_file)(tokens)
    if embedding.shape != (1, llm_dim):
        raise ValueError(f"the LLM's embeddings are {embedding.shape[1]} wide, the projector makes {llm_dim}")
    return embedding.astype(np.float32)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m training.mmproj", description=__doc__.split("\n\n")[0])
    parser.add_argument("--projector", default="bundled", help="projector .npz, or 'bundled'")
    parser.add_argument("--whisper", default=None, help="the Whisper model the projector was trained on")
    parser.add_argument("--llm", default=None, help="the LLM GGUF (default: bundled SmolLM2)")
    parser.add_argument("--out", type=Path, required=True, help="where to write the mmproj GGUF")
    args = parser.parse_args(argv)
    projector = NumpyProjector.load(models.native_projector(args.projector))
    llm_file = models.llama_file(models.gguf_model(args.llm))
    export_mmproj(projector, Path(models.whisper_model(args.whisper)) / "model.bin", llm_file, args.out)
    lora = f" --lora {projector.adapter}" if projector.adapter else ""
    print(f"wrote {args.out}; serve the native model with:\n"
          f"  llama-server -m {llm_file} --mmproj {args.out}{lora} -c 4096 --port 8003")


if __name__ == "__main__":
    main()
