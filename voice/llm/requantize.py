"""A Q8_0 copy of a Q4_1 GGUF, for CPUs where llama.cpp computes Q8_0 much faster.

llama.cpp repacks Q4_0 and Q4_K weights for its AVX2/AVX-512 kernels and multiplies Q8_0 with
int8 dot products, but has no such path for Q4_1, so the bundled SmolLM2-135M Q4_1 evaluates a
prompt much more slowly than the same weights stored as Q8_0. Every Q4_1 value (a 4-bit step of
its block's scale, plus the block's minimum) lands within half a Q8_0 step of itself, so the copy
computes the same model; `python -m benchmarks.llm_formats` measures both.
"""

from __future__ import annotations

import ctypes
import logging
import os
import tempfile
from pathlib import Path

log = logging.getLogger(__name__)


def requantize(source: Path, target: Path, ftype: int) -> None:
    """Write the weights of `source` to `target` in llama.cpp's `ftype` (a LLAMA_FTYPE_* value)."""
    import llama_cpp
    from llama_cpp._utils import suppress_stdout_stderr

    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = ftype
    params.allow_requantize = True  # the source is already quantized: this re-stores its values
    params.nthread = min(2, os.cpu_count() or 1)
    with suppress_stdout_stderr(disable=False):  # llama.cpp logs every tensor it converts
        status = llama_cpp.llama_model_quantize(str(source).encode(), str(target).encode(), ctypes.byref(params))
    if status != 0:
        raise RuntimeError(f"llama_model_quantize returned {status}")


def q8_0_copy(source: Path, directory: Path) -> Path:
    """The Q8_0 copy of `source` in `directory`, made the first time (a few seconds for a small
    model). Several processes may ask at once: each writes its own temporary file and the
    last rename wins, with identical content."""
    import llama_cpp

    target = directory / f"{source.name.removesuffix('.gguf')}.as-q8_0.gguf"
    if target.is_file() and target.stat().st_mtime >= source.stat().st_mtime:
        return target
    directory.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=directory, prefix=f".{target.name}.", suffix=".part")
    os.close(handle)
    try:
        requantize(source, Path(temporary), llama_cpp.LLAMA_FTYPE_MOSTLY_Q8_0)
        os.chmod(temporary, 0o644)  # mkstemp makes it private; the cache is shared like the others
        os.replace(temporary, target)
    finally:
        Path(temporary).unlink(missing_ok=True)
    log.info("stored %s as Q8_0 in %s", source.name, target)
    return target
