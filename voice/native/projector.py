"""The trained piece of the native path: encoder frames -> LLM input embeddings, in numpy.

`stack` consecutive encoder frames are concatenated (50 frames/s -> 12.5 positions/s for k=4),
then a two-layer MLP maps each stacked frame to the LLM's hidden size. Weights live in an `.npz`
(w1 [in, hidden], b1, w2 [hidden, out], b2, float32) with its config in a `.json` beside it
(same stem); training/train.py writes both, and nothing here needs torch. A projector trained
with a LoRA of the LLM names its llama.cpp adapter file (beside it) in the config's `adapter`.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np

ACTIVATIONS = ("gelu_tanh", "silu")
FORMAT = "voice-native-projector/1"


@dataclass(frozen=True)
class ProjectorConfig:
    stack: int = 4
    """Encoder frames concatenated into one LLM position."""
    encoder_dim: int = 384
    hidden_dim: int = 1024
    llm_dim: int = 576
    activation: str = "gelu_tanh"
    """`gelu_tanh` (GELU, tanh approximation) or `silu`."""
    encoder: str = "faster-whisper:bundled"
    """The encoder the projector was trained on (informational; the dimensions are checked)."""
    llm: str = "SmolLM2-135M-Instruct.Q4_1.gguf"
    """The LLM it was trained for (informational; the dimensions are checked)."""
    adapter: str | None = None
    """File name (beside the weights) of the LLM's LoRA adapter trained with the projector, if any."""

    @property
    def in_dim(self) -> int:
        return self.stack * self.encoder_dim

    def __post_init__(self) -> None:
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {ACTIVATIONS}, not {self.activation!r}")
        if self.stack < 1:
            raise ValueError("stack must be at least 1")

    def to_dict(self) -> dict:
        fields_ = {key: value for key, value in asdict(self).items() if value is not None}  # no adapter: no key
        return {"format": FORMAT, **fields_}

    @classmethod
    def from_dict(cls, data: dict) -> ProjectorConfig:
        known = {f.name for f in fields(cls)}
        return cls(**{key: value for key, value in data.items() if key in known})


def stack_frames(features: np.ndarray, stack: int) -> np.ndarray:
    """(frames, dim) -> (ceil(frames / stack), stack * dim); the last group is padded with zeros."""
    frames, dim = features.shape
    positions = max(1, -(-frames // stack))
    padded = np.zeros((positions * stack, dim), dtype=np.float32)
    padded[:frames] = features
    return padded.reshape(positions, stack * dim)


def activate(x: np.ndarray, activation: str) -> np.ndarray:
    if activation == "silu":
        return x / (1.0 + np.exp(-x))
    return 0.5 * x * (1.0 + np.tanh(np.float32(0.7978845608028654) * (x + np.float32(0.044715) * x * x * x)))


def config_path(weights_path: str | Path) -> Path:
    """The config `.json` that goes with a weights `.npz`."""
    return Path(weights_path).with_suffix(".json")


class NumpyProjector:
    """The projector for inference: stack, Linear, activation, Linear (float32 numpy, thread-safe)."""

    def __init__(self, config: ProjectorConfig, weights: dict[str, np.ndarray], adapter: Path | None = None) -> None:
        expected = {"w1": (config.in_dim, config.hidden_dim), "b1": (config.hidden_dim,),
                    "w2": (config.hidden_dim, config.llm_dim), "b2": (config.llm_dim,)}
        for key, shape in expected.items():
            if key not in weights or tuple(weights[key].shape) != shape:
                got = None if key not in weights else tuple(weights[key].shape)
                raise ValueError(f"projector weight {key}: expected shape {shape}, got {got}")
        self.config = config
        self.weights = {key: np.ascontiguousarray(weights[key], dtype=np.float32) for key in expected}
        self.adapter = adapter
        """The LoRA adapter file the LLM runs with under this projector (config.adapter, found on load)."""

    def __call__(self, features: np.ndarray) -> np.ndarray:
        """Encoder states (frames, encoder_dim) -> LLM input embeddings (positions, llm_dim)."""
        if features.ndim != 2 or features.shape[1] != self.config.encoder_dim:
            raise ValueError(f"expected features (frames, {self.config.encoder_dim}), got {features.shape}")
        w = self.weights
        hidden = activate(stack_frames(features, self.config.stack) @ w["w1"] + w["b1"], self.config.activation)
        return (hidden @ w["w2"] + w["b2"]).astype(np.float32)

    @classmethod
    def init(cls, config: ProjectorConfig, seed: int = 0) -> NumpyProjector:
        """Random weights (as torch's Linear initialises them); for tests and untrained runs."""
        rng = np.random.default_rng(seed)

        def uniform(shape: tuple[int, ...], fan_in: int) -> np.ndarray:
            bound = 1.0 / np.sqrt(fan_in)
            return rng.uniform(-bound, bound, shape).astype(np.float32)

        return cls(config, {"w1": uniform((config.in_dim, config.hidden_dim), config.in_dim),
                            "b1": uniform((config.hidden_dim,), config.in_dim),
                            "w2": uniform((config.hidden_dim, config.llm_dim), config.hidden_dim),
                            "b2": uniform((config.llm_dim,), config.hidden_dim)})

    def save(self, path: str | Path) -> Path:
        """Write `path` (.npz weights) and its `.json` config; returns the .npz path."""
        path = Path(path).with_suffix(".npz")
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez(path, **self.weights)
        config_path(path).write_text(json.dumps(self.config.to_dict(), indent=2) + "\n", encoding="utf-8")
        return path

    @classmethod
    def load(cls, path: str | Path) -> NumpyProjector:
        path = Path(path)
        meta = config_path(path)
        if not meta.is_file():
            raise FileNotFoundError(f"projector config {meta} (next to {path}) is missing")
        config = ProjectorConfig.from_dict(json.loads(meta.read_text(encoding="utf-8")))
        adapter = None
        if config.adapter:
            adapter = path.parent / config.adapter
            if not adapter.is_file():
                raise FileNotFoundError(f"LoRA adapter {adapter} (named by {meta}) is missing")
        with np.load(path) as data:
            return cls(config, {key: data[key] for key in data.files}, adapter)
