"""Piper's VITS graph cut at its decoder, so that a chunk's first audio comes before the rest is decoded.

VITS turns phonemes into a latent z (frames of a fixed number of samples) with its text encoder,
duration predictor and flow, and a HiFi-GAN decoder turns z into audio: much of the time of a
short chunk. The decoder is convolutional, so a window of z with enough frames of context
on each side decodes to the very audio the whole decode gives there. Two graphs come out of the
voice's one:

- the head: the whole graph up to z, plus the decode of z's first frames (as many as asked for),
  in one run: the first audio and the latent;
- the decoder alone: for the rest of z, from a few frames before where the head's audio ends.

The head with no frame to decode is the front alone, so the two together also make a whole chunk,
at the cost of the voice's weights once and the decoder's (a tenth of them) twice.

Both are plain ONNX graphs, run by onnxruntime like the voice itself.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

DECODER_PREFIX = "/dec/"
"""Where Piper's (PyTorch) export names the decoder's nodes."""
HEAD_PREFIX = "head/"
"""The names of the head's copy of the decoder start with this: its audio is HEAD_PREFIX + output."""
HEAD_LATENT = "slice/latent"
"""The head's latent output."""
HEAD_FRAMES = "slice/frames"
"""The head's input: how many of the latent's first frames it decodes."""
EXACT_TOLERANCE = 1e-4
"""How far (max abs, audio in [-1, 1]) a windowed decode may differ from the whole decode."""
CONTEXT_CANDIDATES = (10, 12, 16, 24, 32)
"""Frames of context tried on each side of a window, fewest first."""


@dataclass(frozen=True)
class SplitGraph:
    front: Any
    """onnx.ModelProto: the voice's inputs -> the latent."""
    decoder: Any
    """onnx.ModelProto: the latent -> the voice's audio output."""
    latent: str
    """The name of the tensor between them: (1, channels, frames)."""
    output: str
    """The name of the audio output."""


def split_at_decoder(model: bytes, prefix: str = DECODER_PREFIX) -> SplitGraph | None:
    """Cut the ONNX graph `model` where its decoder (nodes named `prefix`...) reads its only input
    from the rest; None when there is no such single tensor (another export, or a multi-speaker
    voice, whose decoder also reads the speaker's embedding)."""
    import onnx
    import onnx.utils

    voice = onnx.load_from_string(model)
    graph = voice.graph
    decoder_nodes = [node for node in graph.node if node.name.startswith(prefix)]
    if not decoder_nodes or len(graph.output) != 1:
        return None
    made_inside = {out for node in decoder_nodes for out in node.output}
    constants = {init.name for init in graph.initializer}
    constants |= {out for node in graph.node if node.op_type == "Constant" for out in node.output}
    read_from_outside = {name for node in decoder_nodes for name in node.input
                         if name and name not in made_inside and name not in constants}
    if len(read_from_outside) != 1:
        return None
    latent, output = read_from_outside.pop(), graph.output[0].name
    extractor = onnx.utils.Extractor(voice)
    front = extractor.extract_model([value.name for value in graph.input], [latent])
    return SplitGraph(front, extractor.extract_model([latent], [output]), latent, output)


def head_graph(split: SplitGraph) -> bytes:
    """The front, and the decoder on the latent's first frames, as one graph: its inputs are the
    voice's and HEAD_FRAMES (int64, shape (1,): how many frames to decode), its outputs the latent
    (HEAD_LATENT) and that audio (HEAD_PREFIX + `split.output`)."""
    import onnx
    import onnx.compose
    import onnx.helper as helper

    shape = [1, "channels", "frames"]
    first = helper.make_graph(
        [helper.make_node("Identity", ["z"], ["latent"]),
         helper.make_node("Slice", ["z", "head_starts", "frames", "head_axes"], ["z_head"])],
        "first_frames",
        [helper.make_tensor_value_info("z", onnx.TensorProto.FLOAT, shape),
         helper.make_tensor_value_info("frames", onnx.TensorProto.INT64, [1])],
        [helper.make_tensor_value_info("latent", onnx.TensorProto.FLOAT, shape),
         helper.make_tensor_value_info("z_head", onnx.TensorProto.FLOAT, [1, "channels", "head_frames"])],
        [helper.make_tensor(name, onnx.TensorProto.INT64, [1], [value])
         for name, value in (("head_starts", 0), ("head_axes", 2))])
    slicer = helper.make_model(first, opset_imports=split.front.opset_import)
    slicer.ir_version = split.front.ir_version
    with_slice = onnx.compose.merge_models(split.front, slicer, io_map=[(split.latent, "z")],
                                           prefix2="slice/")
    decoder = onnx.compose.add_prefix(split.decoder, HEAD_PREFIX)
    head = onnx.compose.merge_models(with_slice, decoder, io_map=[("slice/z_head", HEAD_PREFIX + split.latent)],
                                     outputs=[HEAD_LATENT, HEAD_PREFIX + split.output])
    return head.SerializeToString()


def max_difference(audio: np.ndarray, reference: np.ndarray) -> float:
    """The largest absolute difference between two decodes of the same latent (inf if their lengths differ)."""
    if audio.shape != reference.shape:
        return float("inf")
    return float(np.max(np.abs(audio - reference), initial=0.0))


def find_context(decode: Callable[[np.ndarray], np.ndarray], z: np.ndarray, samples_per_frame: int,
                 candidates: tuple[int, ...] = CONTEXT_CANDIDATES) -> int | None:
    """The fewest frames of context (of `candidates`) with which windows of `z` decoded one by one
    (`decode`: latent -> flat audio) give the whole decode (within EXACT_TOLERANCE), or None when
    none does. A part of a latent is a latent: its first 96 frames are checked, in windows of 16."""
    z = np.ascontiguousarray(z[..., :96])
    frames, whole = z.shape[-1], decode(z)
    for context in candidates:
        if frames < 2 * context + 16:
            break  # too short to tell
        pieces = []
        for start in range(0, frames, 16):
            end = min(frames, start + 16)
            lo, hi = max(0, start - context), min(frames, end + context)
            audio = decode(np.ascontiguousarray(z[..., lo:hi]))
            pieces.append(audio[(start - lo) * samples_per_frame:(end - lo) * samples_per_frame])
        if max_difference(np.concatenate(pieces), whole) <= EXACT_TOLERANCE:
            return context
    return None
