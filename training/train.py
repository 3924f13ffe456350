"""Train the projector (and, with --lora-rank, a LoRA of the LLM); the encoder stays frozen.

Each example is the chat prompt with the projected audio where the user's text would be, then the
target: the LLM's own reply to the text (distillation) or, for the "repeat what I said" task, the
utterance itself. Loss: next-token cross-entropy on the target tokens only. The LLM is the same
GGUF llama.cpp runs, loaded into torch by transformers (dequantized); tokens come from llama.cpp's
tokenizer, so training and inference see the same ids. Needs the `train` extra (torch,
transformers, gguf, accelerate, peft).

With --lora-rank the LLM's linear layers learn a low-rank update too (training/lora.py); it
is exported beside the projector as a llama.cpp adapter (projector.lora.gguf, named in
projector.json), which the native path's llama.cpp contexts apply. Without it the LLM is frozen.

    python -m training.train --data-dir data/native --out runs/native --steps 2000 --batch-size 8 --dtype bfloat16

bfloat16 (the frozen LLM only; the projector learns in float32) is the fast choice on GPUs and on
CPUs with AMX; float32 is the default.

Writes to --out: checkpoint.pt (resumable: run the same command again to go on), projector.npz
and projector.json (what NativeAudioChat loads; with a LoRA, projector.lora.gguf too),
train_log.jsonl (loss, learning rate, timing, resident memory).

glibc's malloc fragments under training's pattern (activations of hundreds of MB, in shapes that
change from batch to batch): the heap grows for as long as the process lives.
--segment-steps runs the training in child processes of that many steps each, resuming the
checkpoint, which gives the heap back between them.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import math
import os
import random
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from training.data import load_manifest
from training.lora import add_lora, has_lora, lora_alpha, lora_parameters, lora_weights, set_lora_weights
from training.mmproj import BOUNDARY_TEXT
from voice import models
from voice.llm.base import ChatMessage
from voice.native.adapter import LoraWeights, adapter_rank, read_adapter, write_adapter
from voice.native.base import REPEAT_INSTRUCTION
from voice.native.model import prompt_texts
from voice.native.projector import NumpyProjector, ProjectorConfig

CHECKPOINT = "checkpoint.pt"
EXPORT = "projector.npz"
LOG = "train_log.jsonl"
ATTENTION = "eager"  # sdpa's CPU backward took most of a bfloat16 step when profiled here
SHAPE_STEP = 32


class TorchProjector(nn.Module):
    """The projector in torch, for training; `to_numpy` gives the inference one (same weights)."""

    def __init__(self, config: ProjectorConfig) -> None:
        super().__init__()
        self.config = config
        self.fc1 = nn.Linear(config.in_dim, config.hidden_dim)
        self.act = nn.GELU(approximate="tanh") if config.activation == "gelu_tanh" else nn.SiLU()
        self.fc2 = nn.Linear(config.hidden_dim, config.llm_dim)

    def stack(self, features: torch.Tensor) -> torch.Tensor:
        """(frames, dim) -> (ceil(frames / stack), stack * dim), zero-padded like projector.stack_frames."""
        frames, dim = features.shape
        k = self.config.stack
        positions = max(1, -(-frames // k))
        padded = torch.zeros(positions * k, dim, dtype=features.dtype)
        padded[:frames] = features
        return padded.reshape(positions, k * dim)

    def forward(self, stacked: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(stacked)))

    def to_numpy(self) -> NumpyProjector:
        weights = {"w1": self.fc1.weight.T, "b1": self.fc1.bias, "w2": self.fc2.weight.T, "b2": self.fc2.bias}
        return NumpyProjector(self.config, {k: v.detach().cpu().numpy().astype(np.float32) for k, v in weights.items()})

    @classmethod
    def from_numpy(cls, projector: NumpyProjector) -> TorchProjector:
        module = cls(projector.config)
        w = projector.weights
        with torch.no_grad():
            module.fc1.weight.copy_(torch.from_numpy(w["w1"].T.copy()))
            module.fc1.bias.copy_(torch.from_numpy(w["b1"]))
            module.fc2.weight.copy_(torch.from_numpy(w["w2"].T.copy()))
            module.fc2.bias.copy_(torch.from_numpy(w["b2"]))
        return module


@functools.cache
def load_llm(model_path: Path, dtype: torch.dtype = torch.float32, device: str = "cpu", lora_rank: int = 0,
             lora_alpha: float = 0.0):
    """The GGUF as a frozen transformers causal LM (dequantized to `dtype`), loaded once per process
    and LoRA setting; with `lora_rank`, LoRA layers (the only trainable weights) on its linear layers."""
    from transformers import AutoModelForCausalLM
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    llm = AutoModelForCausalLM.from_pretrained(str(model_path.parent), gguf_file=model_path.name, dtype=dtype,
                                               attn_implementation=ATTENTION)
    llm.to(device)
    llm.eval()
    llm.requires_grad_(False)
    if lora_rank:
        add_lora(llm, lora_rank, lora_alpha)
        llm.to(device)
    return llm


def adapter_file(export: Path) -> Path:
    """The LoRA adapter exported with the projector `export` (.npz)."""
    return export.with_suffix(".lora.gguf")


def export(out: Path, name: str, projector: TorchProjector, llm) -> NumpyProjector:
    """Write the projector `out/name` (.npz and .json) and, with a LoRA, its adapter beside it."""
    exported = projector.to_numpy()
    path = out / name
    if has_lora(llm):
        adapter = adapter_file(path)
        write_adapter(adapter, lora_weights(llm), alpha=lora_alpha(llm), n_head=llm.config.num_attention_heads,
                      n_head_kv=llm.config.num_key_value_heads)
        exported = NumpyProjector(dataclasses.replace(exported.config, adapter=adapter.name), exported.weights)
    exported.save(path)
    return exported


def init_lora(llm, initial: NumpyProjector | None, args: argparse.Namespace) -> LoraWeights | None:
    """The LoRA weights to start from: the adapter of --init (`initial`), or None (a new LoRA)."""
    if initial is None or initial.adapter is None:
        return None
    if not args.lora_rank:
        raise SystemExit(f"--init {args.init} comes with a LoRA adapter: give --lora-rank "
                         f"(and --lora-alpha) to train on from it")
    weights, alpha = read_adapter(initial.adapter, n_head=llm.config.num_attention_heads,
                                  n_head_kv=llm.config.num_key_value_heads)
    if adapter_rank(weights) != args.lora_rank or alpha != args.lora_alpha:
        raise SystemExit(f"--init's adapter has rank {adapter_rank(weights)} and alpha {alpha:g}, "
                         f"not --lora-rank {args.lora_rank} and --lora-alpha {args.lora_alpha:g}")
    return weights


@dataclass(frozen=True)
class Sample:
    """One training sequence: prompt ids before the audio, the audio's features, ids after it, target ids."""

    before: list[int]
    features: np.ndarray
    after: list[int]
    target: list[int]


class Samples:
    """Turns manifest examples into token sequences for either task (tokenized with llama.cpp)."""

    def __init__(self, examples: list[dict], model_path: Path, max_target: int) -> None:
        from llama_cpp import Llama

        self._vocab = Llama(model_path=str(model_path), vocab_only=True, verbose=False)
        end = self.tokenize("<|im_end|>")
        if len(end) != 1:
            raise ValueError("the LLM's chat template is not ChatML (<|im_end|> is not one token)")
        self.end = end[0]
        self.examples = examples
        # Features are float16 files read when used: the page cache holds them, not the heap, and no
        # file stays open (a memory map would hold one per example).
        self.max_target = max_target
        self._prompts: dict[tuple[str | None, str | None], tuple[list[int], list[int]]] = {}

    def tokenize(self, text: str) -> list[int]:
        return self._vocab.tokenize(text.encode("utf-8"), add_bos=False, special=True)

    def has_reply(self, index: int) -> bool:
        """Whether the example has a reply target (plain sentences are for the repeat task only)."""
        return self.examples[index].get("reply_ids") is not None

    def padded(self, index: int) -> bool:
        """Whether the example's audio was encoded padded to Whisper's window (for llama-server)."""
        return bool(self.examples[index].get("padded_window"))

    def get(self, index: int, repeat: bool) -> Sample:
        """The sequence of one example for one task (a repeat-only example always repeats)."""
        example = self.examples[index]
        if repeat or not self.has_reply(index):
            key = (None, REPEAT_INSTRUCTION, self.padded(index))
            target = self.tokenize(example["text"]) + [self.end]
        else:
            key = (example["system"], None, self.padded(index))
            target = list(example["reply_ids"]) + ([self.end] if example["finished"] else [])
        if key not in self._prompts:
            messages = [ChatMessage("system", key[0])] if key[0] else []
            before, after = prompt_texts(messages, key[1])
            if key[2]:
                before, after = self._llama_server_layout(before, after, key[1])
            else:
                before, after = self.tokenize(before), self.tokenize(after)
            self._prompts[key] = (before, after)
        before, after = self._prompts[key]
        features = np.load(self.examples[index]["features"]).astype(np.float32)
        return Sample(before, features, after, target[: self.max_target])


    def _llama_server_layout(self, before: str, after: str, instruction: str | None) -> tuple[list[int], list[int]]:
        """The prompt as llama-server builds it around an `input_audio` part (training/mmproj.py):
        the instruction text joined to the audio without a line break, and the begin- and
        end-of-audio embeddings, which the export makes those of the newline token, around the audio."""
        newline = self.tokenize(BOUNDARY_TEXT)
        text = before.removesuffix("\n") if instruction else before
        return self.tokenize(text) + newline, newline + self.tokenize(after)


def batch_loss(llm, projector: TorchProjector, samples: list[Sample]) -> tuple[torch.Tensor, int]:
    """Mean next-token cross-entropy over the batch's target tokens (and how many there were)."""
    table = llm.get_input_embeddings()
    device, dtype = table.weight.device, table.weight.dtype

    def embed(tokens: list[int]) -> torch.Tensor:
        return table(torch.tensor(tokens, dtype=torch.long, device=device))

    # The projector learns in float32; the LLM may run in bfloat16 (its matmuls are what cost).
    audio = [projector(projector.stack(torch.from_numpy(sample.features)).to(device)).to(dtype) for sample in samples]
    sequences: list[torch.Tensor] = []
    rows: list[int] = []
    columns: list[int] = []
    labels: list[int] = []
    for row, (sample, projected) in enumerate(zip(samples, audio, strict=True)):
        parts = [embed(sample.before), projected, embed(sample.after)]
        if len(sample.target) > 1:
            parts.append(embed(sample.target[:-1]))
        sequence = torch.cat(parts)
        first = len(sample.before) + projected.shape[0] + len(sample.after) - 1  # predicts target[0]
        rows += [row] * len(sample.target)
        columns += range(first, first + len(sample.target))
        labels += sample.target
        sequences.append(sequence)
    # Padded to a multiple of 32 so that batches come in few shapes: CPU matmul kernels are
    # prepared per shape (padding is masked, and causal attention never looks ahead at it).
    length = -(-max(sequence.shape[0] for sequence in sequences) // SHAPE_STEP) * SHAPE_STEP
    inputs = torch.zeros(len(sequences), length, sequences[0].shape[1], dtype=dtype, device=device)
    mask = torch.zeros(len(sequences), length, dtype=torch.long, device=device)
    for row, sequence in enumerate(sequences):
        inputs[row, : sequence.shape[0]] = sequence
        mask[row, : sequence.shape[0]] = 1
    hidden = llm.model(inputs_embeds=inputs, attention_mask=mask).last_hidden_state
    logits = llm.lm_head(hidden[torch.tensor(rows, device=device), torch.tensor(columns, device=device)])
    return nn.functional.cross_entropy(logits.float(), torch.tensor(labels, device=device)), len(labels)


def load_examples(data_dirs: list[Path], llm_name: str) -> tuple[list[dict], dict]:
    """The examples of all the data directories (their feature paths made whole) and the first
    one's info; the directories must share an encoder."""
    examples: list[dict] = []
    infos = []
    for data_dir in data_dirs:
        found = load_manifest(data_dir)
        if not found:
            raise SystemExit(f"no examples in {data_dir} (make some with python -m training.data)")
        info = json.loads((data_dir / "info.json").read_text(encoding="utf-8"))
        if info.get("llm") != llm_name:
            print(f"warning: the replies in {data_dir} were written by {info.get('llm')}, training for {llm_name}")
        infos.append(info)
        examples += [{**example, "features": str(data_dir / example["features"]),
                      "padded_window": bool(info.get("padded_window"))} for example in found]
    if len({(info["encoder"], info["encoder_dim"]) for info in infos}) > 1:
        raise SystemExit("the data directories were encoded by different encoders")
    return examples, infos[0]


def resident_gib() -> float:
    """This process's resident memory in GiB (Linux; 0 elsewhere): the heap, and the pages of the
    memory-mapped features in use. Logged to watch the heap grow."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
    except (OSError, IndexError, ValueError):
        return 0.0
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**30


def learning_rate(step: int, args: argparse.Namespace) -> float:
    """Linear warm-up, then cosine decay to a tenth."""
    if step < args.warmup:
        return args.lr * (step + 1) / args.warmup
    progress = (step - args.warmup) / max(1, args.steps - args.warmup)
    return args.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress))))


def save_checkpoint(out: Path, step: int, projector: TorchProjector, llm, optimizer: torch.optim.Optimizer,
                    keep_export: bool = False) -> None:
    """The resumable checkpoint and the exported projector and LoRA (also as projector-stepN.npz and
    projector-stepN.lora.gguf when kept)."""
    state = {"step": step, "config": projector.config.to_dict(), "projector": projector.state_dict(),
             "lora": lora_weights(llm) if has_lora(llm) else None,
             "optimizer": optimizer.state_dict(), "torch_rng": torch.get_rng_state()}
    temporary = out / f"{CHECKPOINT}.tmp"
    torch.save(state, temporary)
    os.replace(temporary, out / CHECKPOINT)
    export(out, EXPORT, projector, llm)
    if keep_export:
        export(out, f"{Path(EXPORT).stem}-step{step}.npz", projector, llm)


def evaluate(llm, projector: TorchProjector, samples: Samples, indices: list[int], batch_size: int) -> dict:
    """Validation loss per task on held-out examples (`val_window_*`: those padded to Whisper's window)."""
    result = {}
    with torch.no_grad():
        for prefix, padded in (("val", False), ("val_window", True)):
            layout = [i for i in indices if samples.padded(i) == padded]
            if layout:
                result[f"{prefix}_reply"] = _mean_loss(llm, projector, samples, layout, False, batch_size)
                result[f"{prefix}_repeat"] = _mean_loss(llm, projector, samples, layout, True, batch_size)
    return result


def _mean_loss(llm, projector: TorchProjector, samples: Samples, indices: list[int], repeat: bool,
               batch_size: int) -> float:
    """The loss per target token of one task over `indices` (those with a reply, for replies)."""
    total, count = 0.0, 0
    scored = indices if repeat else [i for i in indices if samples.has_reply(i)]
    for start in range(0, len(scored), batch_size):
        loss, n = batch_loss(llm, projector, [samples.get(i, repeat) for i in scored[start:start + batch_size]])
        total, count = total + float(loss) * n, count + n
    return round(total / max(1, count), 4)


def split_by_text(examples: list[dict], val_fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """Training and validation indices, held out by text: all recordings of a text (another data
    directory speaks it in other voices) land on the same side, so validation hears unseen words only."""
    by_text: dict[str, list[int]] = {}
    for index, example in enumerate(examples):
        # Not sentences.words: its keys sort in another order, which would draw another validation set
        # than the one the bundled projector's card reports.
        by_text.setdefault(" ".join(example["text"].lower().split()), []).append(index)
    texts = sorted(by_text)
    random.Random(seed).shuffle(texts)
    wanted, val = int(len(examples) * val_fraction), []
    for text in texts:
        if len(val) >= wanted:
            break
        val += by_text[text]
    val.sort()
    held = set(val)
    train = [index for index in range(len(examples)) if index not in held]
    return train or val, val


def train(args: argparse.Namespace) -> Path:
    """Run (or resume) a training run; returns the exported projector .npz."""
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    model_path = models.gguf_model(args.llm_model)
    examples, info = load_examples([Path(d) for d in args.data_dir], model_path.name)
    llm = load_llm(model_path, getattr(torch, args.dtype), args.device, args.lora_rank,
                   args.lora_alpha if args.lora_rank else 0.0)
    samples = Samples(examples, model_path, args.max_target_tokens)
    train_indices, val_indices = split_by_text(examples, args.val_fraction, args.seed)
    windowed = [i for i in train_indices if samples.padded(i)]
    unpadded = [i for i in train_indices if not samples.padded(i)] or windowed

    checkpoint = out / CHECKPOINT
    state = torch.load(checkpoint, weights_only=False) if checkpoint.is_file() and not args.restart else None
    if state is not None:
        config = ProjectorConfig.from_dict(state["config"])
    else:
        config = ProjectorConfig(stack=args.stack, encoder_dim=int(info["encoder_dim"]), hidden_dim=args.hidden_dim,
                                 llm_dim=llm.config.hidden_size, activation=args.activation,
                                 encoder=info["encoder"], llm=model_path.name)
    torch.manual_seed(args.seed)
    initial = NumpyProjector.load(args.init) if args.init else None
    projector = TorchProjector.from_numpy(initial) if initial else TorchProjector(config)
    projector.to(args.device)
    start_lora = init_lora(llm, initial, args)  # refuses an --init trained with a LoRA when --lora-rank is 0
    if args.lora_rank:
        set_lora_weights(llm, start_lora)  # None: a new LoRA, also for a model this process trained before
    groups = [{"params": list(projector.parameters()), "base_lr": args.lr}]
    if args.lora_rank:
        groups.append({"params": lora_parameters(llm), "base_lr": args.lora_lr or args.lr})
    optimizer = torch.optim.AdamW(groups, lr=args.lr, weight_decay=args.weight_decay)
    trained = [p for group in groups for p in group["params"]]
    step = 0
    if state is not None:
        if bool(state.get("lora")) != bool(args.lora_rank):
            raise SystemExit(f"{checkpoint} was trained {'with' if state.get('lora') else 'without'} a LoRA: "
                             f"give the same --lora-rank to resume it, or --restart")
        projector.load_state_dict(state["projector"])
        if state.get("lora"):
            set_lora_weights(llm, state["lora"])
        optimizer.load_state_dict(state["optimizer"])
        torch.set_rng_state(state["torch_rng"])
        step = int(state["step"])
        print(f"resuming {checkpoint} at step {step}")
    lora = f", LoRA {sum(p.numel() for p in lora_parameters(llm)):,}" if args.lora_rank else ""
    print(f"{len(train_indices)} training and {len(val_indices)} validation examples; projector "
          f"{sum(p.numel() for p in projector.parameters()):,} parameters{lora}; {args.steps} steps of "
          f"{args.batch_size}")
    if args.evaluate_only:  # the validation losses of the checkpoint (or of --init), nothing trained or written
        print(json.dumps({"step": step, **evaluate(llm, projector, samples, val_indices, args.batch_size)}))
        return out / EXPORT

    with open(out / LOG, "a", encoding="utf-8") as log:
        while step < min(args.steps, args.stop_at or args.steps):
            started = time.perf_counter()
            rng = random.Random(f"{args.seed}-{step}")  # the batch depends on the step only: resumes reproduce
            pool = train_indices
            if windowed:  # batches of one layout: a padded clip is 375 positions long
                pool = windowed if rng.random() < args.window_share else unpadded
            batch = [samples.get(rng.choice(pool), rng.random() < args.repeat_share) for _ in range(args.batch_size)]
            lr = learning_rate(step, args)
            for group in optimizer.param_groups:
                group["lr"] = lr * group["base_lr"] / args.lr
            loss, n_tokens = batch_loss(llm, projector, batch)
            optimizer.zero_grad()
            loss.backward()
            norm = nn.utils.clip_grad_norm_(trained, args.clip)
            optimizer.step()
            step += 1
            record = {"step": step, "loss": round(loss.item(), 4), "lr": lr, "grad_norm": round(float(norm), 3),
                      "tokens": n_tokens, "seconds": round(time.perf_counter() - started, 3),
                      "rss_gib": round(resident_gib(), 2)}
            if step % args.checkpoint_every == 0 or step in (args.steps, args.stop_at):
                save_checkpoint(out, step, projector, llm, optimizer, args.keep_exports)
                if val_indices:
                    record.update(evaluate(llm, projector, samples, val_indices, args.batch_size))
            log.write(json.dumps(record) + "\n")
            log.flush()
            if step % args.log_every == 0 or step == args.steps or "val_reply" in record:
                print(" ".join(f"{key}={value}" for key, value in record.items()), flush=True)
    if not (out / EXPORT).is_file():  # resumed a finished run: nothing was trained, export the checkpoint anyway
        export(out, EXPORT, projector, llm)
    return out / EXPORT


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m training.train", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--data-dir", required=True, nargs="+", help="made by python -m training.data (one or more)")
    p.add_argument("--out", required=True, help="run directory: checkpoint.pt, projector.npz/.json, train_log.jsonl")
    p.add_argument("--steps", type=int, default=2000, help="total optimizer steps (a resumed run goes on to this)")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--weight-decay", type=float, default=0.01)
    p.add_argument("--warmup", type=int, default=100, help="warm-up steps")
    p.add_argument("--clip", type=float, default=1.0, help="gradient norm clipping")
    p.add_argument("--checkpoint-every", type=int, default=100, help="steps between checkpoints (and exports)")
    p.add_argument("--keep-exports", action="store_true",
                   help="also keep each checkpoint's projector as projector-stepN.npz (to evaluate them later)")
    p.add_argument("--log-every", type=int, default=10)
    p.add_argument("--repeat-share", type=float, default=0.3,
                   help="share of 'repeat what I said' among examples with a reply too (plain sentences always repeat)")
    p.add_argument("--val-fraction", type=float, default=0.02,
                   help="share held out by text (all voices of a text together), evaluated at each checkpoint")
    p.add_argument("--window-share", type=float, default=0.5,
                   help="share of batches drawn from examples padded to Whisper's window (data made with "
                        "--padded-window), when there are any")
    p.add_argument("--max-target-tokens", type=int, default=64)
    p.add_argument("--stack", type=int, default=4, help="encoder frames per LLM position")
    p.add_argument("--hidden-dim", type=int, default=1024)
    p.add_argument("--activation", choices=["gelu_tanh", "silu"], default="gelu_tanh")
    p.add_argument("--init", default=None,
                   help="start from this projector .npz (and the LoRA adapter it names) instead of random weights")
    p.add_argument("--lora-rank", type=int, default=0,
                   help="also train a LoRA of this rank on the LLM's linear layers (0: the LLM stays frozen)")
    p.add_argument("--lora-alpha", type=float, default=16.0,
                   help="LoRA scaling alpha (the update is scaled by alpha / rank)")
    p.add_argument("--lora-lr", type=float, default=None, help="the LoRA's peak learning rate (default: --lr)")
    p.add_argument("--stop-at", type=int, default=None,
                   help="stop after this step, checkpointed (the learning-rate schedule still runs to --steps)")
    p.add_argument("--segment-steps", type=int, default=0,
                   help="train in child processes of this many steps each, each resuming the checkpoint: "
                        "the heap, which malloc fragments, is given back between them (0: one process)")
    p.add_argument("--restart", action="store_true", help="ignore an existing checkpoint in --out")
    p.add_argument("--evaluate-only", action="store_true",
                   help="print the validation losses of the checkpoint in --out (or of --init with --restart)")
    p.add_argument("--llm-model", default=None, help="GGUF of the frozen LLM (default: bundled SmolLM2)")
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    p.add_argument("--device", default="cpu", help="torch device: cpu, cuda, cuda:1, ...")
    p.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32",
                   help="the frozen LLM's precision (the projector learns in float32); bfloat16 is several "
                        "times faster on GPUs and on CPUs with AMX")
    p.add_argument("--seed", type=int, default=0)
    return p


def train_in_segments(argv: list[str], args: argparse.Namespace) -> Path:
    """Run `argv` in child processes that stop every `args.segment_steps` steps; each resumes the
    checkpoint of the one before (a segment already done only loads and stops)."""
    # The same arguments (argparse takes an option's last value), --restart for the first segment only.
    child = [arg for arg in argv if arg != "--restart"] + ["--segment-steps", "0"]
    stops = list(range(args.segment_steps, args.steps, args.segment_steps)) + [args.steps]
    for number, stop in enumerate(stops):
        command = [sys.executable, "-m", "training.train", *child, "--stop-at", str(stop)]
        if number == 0 and args.restart:
            command.append("--restart")
        subprocess.run(command, check=True)
    return Path(args.out) / EXPORT


def main(argv: list[str] | None = None) -> Path:
    argv = sys.argv[1:] if argv is None else argv
    args = parser().parse_args(argv)
    if args.segment_steps and not args.evaluate_only:
        return train_in_segments(argv, args)
    return train(args)


if __name__ == "__main__":
    main()
