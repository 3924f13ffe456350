"""Read the variables of a CTranslate2 `model.bin` (format version 6) as numpy arrays.

CTranslate2 runs its models but has no API that hands their weights out; exporting the Whisper
encoder to another runtime (llama.cpp's mmproj, `training.mmproj`) needs them. The file is a
header (version, spec name, revision), the variables (name, shape, dtype, bytes) and aliases.
"""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np

_DTYPES = {0: np.float32, 1: np.int8, 2: np.int16, 3: np.int32, 4: np.float16}
_SUPPORTED_VERSIONS = (5, 6)


class _Cursor:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def unpack(self, fmt: str) -> int:
        (value,) = struct.unpack_from(fmt, self.data, self.pos)
        self.pos += struct.calcsize(fmt)
        return value

    def string(self) -> str:
        length = self.unpack("<H")  # counts the trailing NUL
        text = self.data[self.pos:self.pos + length - 1].decode()
        self.pos += length
        return text


def read_variables(model_bin: str | Path) -> tuple[str, dict[str, np.ndarray]]:
    """(spec name, {variable name: array}) of a CTranslate2 model file; aliases resolve to their targets.

    Arrays are read-only views of the file's bytes (int8 variables keep their `.../weight_scale`)."""
    data = Path(model_bin).read_bytes()
    cursor = _Cursor(data)
    version = cursor.unpack("<I")
    if version not in _SUPPORTED_VERSIONS:
        raise ValueError(f"{model_bin}: CTranslate2 model format {version} is not supported "
                         f"(supported: {_SUPPORTED_VERSIONS})")
    spec = cursor.string()
    cursor.unpack("<I")  # spec revision
    variables: dict[str, np.ndarray] = {}
    for _ in range(cursor.unpack("<I")):
        name = cursor.string()
        shape = [cursor.unpack("<I") for _ in range(cursor.unpack("<B"))]
        code = cursor.unpack("<B")
        if code not in _DTYPES:
            raise ValueError(f"{model_bin}: variable {name} has an unsupported dtype code {code}")
        dtype = np.dtype(_DTYPES[code])
        size = cursor.unpack("<I")
        variables[name] = np.frombuffer(data, dtype, size // dtype.itemsize, cursor.pos).reshape(shape)
        cursor.pos += size
    if cursor.pos < len(data):
        for _ in range(cursor.unpack("<I")):
            alias, target = cursor.string(), cursor.string()
            variables[alias] = variables[target]
    return spec, variables


def float_weight(variables: dict[str, np.ndarray], name: str) -> np.ndarray:
    """A weight as float32, dequantizing an int8 one with its per-row `weight_scale`."""
    weight = variables[name]
    if weight.dtype == np.int8:
        scale = variables[name.removesuffix("weight") + "weight_scale"].astype(np.float32)
        return weight.astype(np.float32) / scale.reshape(-1, *([1] * (weight.ndim - 1)))
    return weight.astype(np.float32)
