"""LoRA on the native path's LLM while the projector trains (the `train` extra: torch, peft).

The frozen 135M LLM limits how well it can read the projected audio back as words; a low-rank
update of its linear layers (peft's LoRA, alpha / rank scaling as llama.cpp applies it) lets it
learn to. The weights leave training as a llama.cpp adapter file (voice/native/adapter.py), which
only the native path's contexts load: the cascade's LLM stays the plain model.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from voice.native.adapter import TARGETS, LoraWeights

ADAPTER = "default"


def add_lora(llm: nn.Module, rank: int, alpha: float) -> None:
    """Give `llm`'s linear layers (TARGETS) a LoRA of `rank`, B at zero (the model is unchanged
    until it trains); the LoRA weights learn in float32 whatever the LLM's dtype."""
    from peft import LoraConfig, inject_adapter_in_model

    config = LoraConfig(r=rank, lora_alpha=alpha, target_modules=list(TARGETS), lora_dropout=0.0, bias="none")
    inject_adapter_in_model(config, llm, adapter_name=ADAPTER)
    for parameter in lora_parameters(llm):
        parameter.data = parameter.data.float()
        parameter.requires_grad_(True)


def _layers(llm: nn.Module) -> dict[str, nn.Module]:
    from peft.tuners.lora import LoraLayer

    return {name: module for name, module in llm.named_modules() if isinstance(module, LoraLayer)}


def has_lora(llm: nn.Module) -> bool:
    return bool(_layers(llm))


def lora_alpha(llm: nn.Module) -> float:
    """The alpha `llm`'s LoRA was made with (the update is scaled by alpha / rank)."""
    return float(next(iter(_layers(llm).values())).lora_alpha[ADAPTER])


def lora_parameters(llm: nn.Module) -> list[nn.Parameter]:
    """The trainable LoRA weights (A and B of every adapted layer)."""
    return [p for layer in _layers(llm).values()
            for p in (layer.lora_A[ADAPTER].weight, layer.lora_B[ADAPTER].weight)]


def lora_weights(llm: nn.Module) -> LoraWeights:
    """The LoRA as numpy float32 (A (rank, in), B (out, rank)) by transformers module name."""
    return {name: (layer.lora_A[ADAPTER].weight.detach().float().cpu().numpy(),
                   layer.lora_B[ADAPTER].weight.detach().float().cpu().numpy())
            for name, layer in _layers(llm).items()}


def set_lora_weights(llm: nn.Module, weights: LoraWeights | None) -> None:
    """Load `weights` into the LoRA layers (all of them, same shapes); None starts it anew (A
    random, B zero: no change to the model)."""
    layers = _layers(llm)
    if weights is None:
        for layer in layers.values():
            layer.reset_lora_parameters(ADAPTER, True)
            layer.lora_A[ADAPTER].weight.data = layer.lora_A[ADAPTER].weight.data.float()
            layer.lora_B[ADAPTER].weight.data = layer.lora_B[ADAPTER].weight.data.float()
        return
    if set(weights) != set(layers):
        raise ValueError(f"the LoRA weights adapt {len(weights)} layers, the model has {len(layers)} LoRA layers")
    with torch.no_grad():
        for name, (a, b) in weights.items():
            layer = layers[name]
            for target, value in ((layer.lora_A[ADAPTER].weight, a), (layer.lora_B[ADAPTER].weight, b)):
                if tuple(target.shape) != tuple(value.shape):
                    raise ValueError(f"{name}: LoRA weight of shape {value.shape}, "
                                     f"the layer's is {tuple(target.shape)}")
                target.copy_(torch.from_numpy(np.asarray(value, dtype=np.float32)))
