"""LoRA fine-tuning of a local causal LM on chat transcripts (the analyst's own logged answers).

Meant for a GPU and a real instruct model; it runs on the CPU for tiny models such as
:func:`celeris.testing.tiny_llm.build_tiny_model`, which is how it is tested. A plain PyTorch loop
(AdamW) over peft's LoRA adapters; the loss counts only the assistant's tokens.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
import warnings
from collections.abc import Iterator, Sequence
from contextlib import nullcontext
from pathlib import Path
from typing import Any, cast

import torch
import torch.nn.functional as F
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForCausalLM, AutoTokenizer
from transformers.utils import logging as hf_logging

from celeris.checks import check_int, check_real
from celeris.compute.device import resolve_torch_device
from celeris.data.atomic import atomic_write_text
from celeris.errors import CelerisWarning, ConfigError, DataError
from celeris.progress import progress_bar

__all__ = ["FinetuneResult", "finetune_lora", "read_chat_dataset"]

IGNORE_INDEX = -100  # label of a token the loss skips (torch cross_entropy's ignore_index)
SETTINGS_FILE = "celeris_finetune.json"


@dataclasses.dataclass(frozen=True)
class FinetuneResult:
    """What :func:`finetune_lora` did.

    ``first_loss`` and ``last_loss`` are the mean cross-entropy per assistant token over the whole
    dataset, measured before and after training, so they compare like with like.
    """

    out_dir: Path
    steps: int
    first_loss: float
    last_loss: float
    trainable_params: int
    total_params: int


def read_chat_dataset(path: str | Path) -> list[list[dict[str, str]]]:
    """Read a JSONL chat dataset and return its conversations.

    Each non-blank line is ``{"messages": [{"role": ..., "content": ...}, ...], "meta": {...}}``
    with at least one ``assistant`` turn; ``meta`` is ignored.

    Raises
    ------
    ConfigError
        If the file does not exist.
    DataError
        If the file is empty, or a line is not JSON, has no message list, has a malformed
        message or no assistant turn; the message names the line number.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"dataset {path} does not exist")
    conversations = []
    with path.open(encoding="utf-8") as lines:
        for number, line in enumerate(lines, start=1):
            if line.strip():
                conversations.append(_parse_line(line, f"{path}:{number}"))
    if not conversations:
        raise DataError(f"dataset {path} is empty")
    return conversations


def _parse_line(line: str, where: str) -> list[dict[str, str]]:
    try:
        record = json.loads(line)
    except json.JSONDecodeError as exc:
        raise DataError(f"{where}: not valid JSON ({exc.msg})") from None
    messages = record.get("messages") if isinstance(record, dict) else None
    if not isinstance(messages, list) or not messages:
        raise DataError(f"{where}: expected an object with a non-empty 'messages' list")
    for i, message in enumerate(messages):
        if not (
            isinstance(message, dict)
            and isinstance(message.get("role"), str)
            and isinstance(message.get("content"), str)
        ):
            raise DataError(f"{where}: messages[{i}] needs string 'role' and 'content'")
    if not any(message["role"] == "assistant" for message in messages):
        raise DataError(f"{where}: no assistant turn to learn from")
    return [{"role": m["role"], "content": m["content"]} for m in messages]


def finetune_lora(
    model_dir: str | Path,
    dataset_jsonl: str | Path,
    out_dir: str | Path,
    *,
    epochs: int = 1,
    lr: float = 2e-4,
    rank: int = 8,
    alpha: int = 16,
    max_length: int = 512,
    batch_size: int = 1,
    seed: int = 0,
    target_modules: Sequence[str] | None = None,
    progress: bool = True,
    device: str = "auto",
) -> FinetuneResult:
    """Fine-tune LoRA adapters of a local causal LM on a chat dataset and save them.

    Meant for a GPU (it trains in bf16 autocast where the GPU supports it); it runs on the CPU
    for tiny models. The loss is the cross-entropy of the assistant turns only: system and user
    turns and the assistant-turn headers are masked out. A conversation longer than
    ``max_length`` tokens keeps its last ``max_length`` (the answer survives, the start of a long
    prompt is lost); ``celeris_finetune.json`` counts them as ``truncated``.

    Parameters
    ----------
    model_dir
        Local model directory (``save_pretrained`` layout) with a fast tokenizer and a chat
        template.
    dataset_jsonl
        Chat transcripts, one JSON object per line (see :func:`read_chat_dataset`).
    out_dir
        Where the adapter (``adapter_config.json``, ``adapter_model.safetensors``) and
        ``celeris_finetune.json`` (settings, per-step losses) are written; load the adapter with
        ``peft.PeftModel.from_pretrained(base_model, out_dir)``.
    epochs, lr, batch_size
        Passes over the data, AdamW learning rate and conversations per step.
    rank, alpha
        LoRA rank and scaling numerator (the update is scaled by ``alpha / rank``).
    max_length
        Longest training sequence in tokens; longer conversations lose their first tokens.
    seed
        Seed of the adapter initialisation and the shuffling; the caller's RNG state is kept.
    target_modules
        Module names to adapt; None uses peft's default for the architecture (``q_proj`` and
        ``v_proj`` for Llama).
    progress
        Show a progress bar on stderr when it is a terminal.
    device
        ``"auto"``, ``"cpu"`` or ``"cuda"``.

    Returns
    -------
    FinetuneResult

    Raises
    ------
    ConfigError
        On a bad setting, a missing model or dataset, or modules peft cannot adapt.
    DataError
        On a malformed dataset line (named by its number).
    """
    _check_settings(
        epochs=epochs, lr=lr, rank=rank, alpha=alpha, max_length=max_length, batch_size=batch_size
    )
    model_dir, out = Path(model_dir), Path(out_dir)
    if not (model_dir / "config.json").is_file():
        raise ConfigError(f"no model at {model_dir}: config.json is missing")
    conversations = read_chat_dataset(dataset_jsonl)
    torch_device = resolve_torch_device(device)
    tokenizer, base, pad_id = _load_base(model_dir)
    examples = _encode_all(tokenizer, conversations, max_length)

    started = time.perf_counter()
    cuda_devices = [torch_device.index or 0] if torch_device.type == "cuda" else []
    with torch.random.fork_rng(devices=cuda_devices):
        torch.manual_seed(seed)
        model = _lora_model(base, rank, alpha, target_modules).to(torch_device)
        trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
        total = sum(p.numel() for p in model.parameters())
        first_loss = _dataset_loss(model, examples, pad_id, batch_size, torch_device)
        losses = _train(
            model, examples, pad_id, torch_device,
            epochs=epochs, lr=lr, batch_size=batch_size, seed=seed, progress=progress,
        )  # fmt: skip
        last_loss = _dataset_loss(model, examples, pad_id, batch_size, torch_device)

    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(out))
    result = FinetuneResult(out, len(losses), first_loss, last_loss, trainable, total)
    # peft resolves the default modules into a set (or keeps a regex string).
    adapted = cast(LoraConfig, model.peft_config["default"]).target_modules
    settings: dict[str, Any] = {
        "base_model": str(model_dir),
        "dataset": str(dataset_jsonl),
        "conversations": len(examples),
        "epochs": epochs,
        "lr": lr,
        "rank": rank,
        "alpha": alpha,
        "max_length": max_length,
        "truncated": sum(e.truncated for e in examples),
        "batch_size": batch_size,
        "seed": seed,
        "target_modules": adapted if isinstance(adapted, str) else sorted(adapted or ()),
        "device": str(torch_device),
        "seconds": round(time.perf_counter() - started, 3),
        "steps": result.steps,
        "first_loss": first_loss,
        "last_loss": last_loss,
        "trainable_params": trainable,
        "total_params": total,
        "losses": losses,
    }
    atomic_write_text(out / SETTINGS_FILE, json.dumps(settings, indent=2) + "\n")
    return result


def _load_base(model_dir: Path) -> tuple[Any, Any, int]:
    """The tokenizer, the base model and the padding token id (EOS when there is no pad)."""
    was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()  # transformers' weight-loading bar, not ours
    try:
        tokenizer = AutoTokenizer.from_pretrained(model_dir)
        base = AutoModelForCausalLM.from_pretrained(model_dir)
    finally:
        if was_enabled:
            hf_logging.enable_progress_bar()
    if tokenizer.pad_token_id is None and tokenizer.eos_token_id is None:
        raise ConfigError(f"the tokenizer at {model_dir} has neither a pad nor an EOS token")
    pad_id = (
        tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    )
    return tokenizer, base, pad_id


def _lora_model(base: Any, rank: int, alpha: int, target_modules: Sequence[str] | None) -> Any:
    """``base`` with fresh LoRA adapters (initialised from torch's current RNG state)."""
    lora = LoraConfig(
        r=rank,
        lora_alpha=alpha,
        lora_dropout=0.0,
        target_modules=list(target_modules) if target_modules is not None else None,
        task_type="CAUSAL_LM",
    )
    try:
        with warnings.catch_warnings():
            # peft reads PreTrainedModel.is_gradient_checkpointing, which transformers 5
            # deprecates; the caller can do nothing about it, so it is not passed on.
            warnings.filterwarnings(
                "ignore", "`is_gradient_checkpointing` is deprecated", FutureWarning
            )
            return get_peft_model(base, lora)
    except ValueError as exc:  # peft: no default modules for this architecture, or no match
        raise ConfigError(f"LoRA cannot adapt this model: {exc}") from exc


def _train(
    model: Any,
    examples: list[_Example],
    pad_id: int,
    torch_device: torch.device,
    *,
    epochs: int,
    lr: float,
    batch_size: int,
    seed: int,
    progress: bool,
) -> list[float]:
    """AdamW over the trainable (adapter) weights; the loss of every step, in order."""
    optimizer = torch.optim.AdamW(
        [p for p in model.parameters() if p.requires_grad], lr=lr, weight_decay=0.0
    )
    order = torch.Generator().manual_seed(seed)
    steps_per_epoch = math.ceil(len(examples) / batch_size)
    losses: list[float] = []
    bar = _progress(progress, epochs * steps_per_epoch)
    model.train()
    try:
        for _ in range(epochs):
            shuffled = [examples[i] for i in torch.randperm(len(examples), generator=order)]
            for batch in _batches(shuffled, batch_size, pad_id, torch_device):
                with _autocast(torch_device):
                    total_loss, count = _batch_loss(model, batch)
                loss = total_loss / count
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                losses.append(float(loss.detach()))
                if bar is not None:
                    bar.update(0, advance=1, loss=f"loss {losses[-1]:.4f}")
    finally:
        if bar is not None:
            bar.stop()
    return losses


def _check_settings(
    *, epochs: int, lr: float, rank: int, alpha: int, max_length: int, batch_size: int
) -> None:
    check_int("epochs", epochs, minimum=1)
    check_real("lr", lr, minimum=0, open_low=True)
    check_int("rank", rank, minimum=1)
    check_real("alpha", alpha, minimum=0, open_low=True)  # peft scales by alpha / rank
    check_int("max_length", max_length, minimum=2)
    check_int("batch_size", batch_size, minimum=1)


@dataclasses.dataclass(frozen=True)
class _Example:
    input_ids: list[int]
    labels: list[int]  # the token itself on assistant tokens, IGNORE_INDEX elsewhere
    truncated: bool = False


def _render(tokenizer: Any, messages: list[dict[str, str]], *, generation_prompt: bool) -> str:
    if not messages and not generation_prompt:
        return ""
    return str(
        tokenizer.apply_chat_template(
            messages, tokenize=False, add_generation_prompt=generation_prompt
        )
    )


def _encode(tokenizer: Any, messages: list[dict[str, str]], max_length: int) -> _Example:
    """Tokenize one conversation, labelling the assistant turns' content and end-of-turn.

    Each turn is rendered by the chat template and tokenized on its own: an assistant turn's
    tokens are then exactly the ones the model generates after the rendered prompt, and the mask
    boundary never falls inside a token merged across turns.
    """
    input_ids: list[int] = []
    labels: list[int] = []

    def add(text: str, learn: bool) -> None:
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        input_ids.extend(ids)
        labels.extend(ids if learn else [IGNORE_INDEX] * len(ids))

    rendered = ""
    for i, message in enumerate(messages):
        upto = _render(tokenizer, messages[: i + 1], generation_prompt=False)
        if not upto.startswith(rendered):
            raise ConfigError("the chat template does not render conversations prefix by prefix")
        turn = upto[len(rendered) :]
        if message["role"] == "assistant":
            header = _render(tokenizer, messages[:i], generation_prompt=True)[len(rendered) :]
            if not turn.startswith(header):
                raise ConfigError("the chat template's generation prompt does not open its turns")
            add(header, learn=False)
            add(turn[len(header) :], learn=True)
        else:
            add(turn, learn=False)
        rendered = upto
    # Cut from the start: the analyst's prompts are long and the answer, the thing to learn,
    # comes last.
    return _Example(input_ids[-max_length:], labels[-max_length:], len(input_ids) > max_length)


def _encode_all(
    tokenizer: Any, conversations: list[list[dict[str, str]]], max_length: int
) -> list[_Example]:
    examples = [_encode(tokenizer, messages, max_length) for messages in conversations]
    # The first token has no prediction, so a label must sit at position >= 1 to count.
    kept = [e for e in examples if any(label != IGNORE_INDEX for label in e.labels[1:])]
    if not kept:
        raise DataError(f"no assistant tokens remain within max_length={max_length}")
    if len(kept) < len(examples):
        warnings.warn(
            f"{len(examples) - len(kept)} of {len(examples)} conversations have no assistant "
            f"tokens within max_length={max_length} and are skipped",
            CelerisWarning,
            stacklevel=3,
        )
    return kept


def _batches(
    examples: list[_Example], batch_size: int, pad_id: int, device: torch.device
) -> Iterator[dict[str, torch.Tensor]]:
    for start in range(0, len(examples), batch_size):
        chunk = examples[start : start + batch_size]
        width = max(len(e.input_ids) for e in chunk)
        ids = torch.full((len(chunk), width), pad_id, dtype=torch.long)  # [B, L]
        labels = torch.full((len(chunk), width), IGNORE_INDEX, dtype=torch.long)  # [B, L]
        mask = torch.zeros((len(chunk), width), dtype=torch.long)  # [B, L]
        for row, example in enumerate(chunk):
            n = len(example.input_ids)
            ids[row, :n] = torch.tensor(example.input_ids)
            labels[row, :n] = torch.tensor(example.labels)
            mask[row, :n] = 1
        yield {
            "input_ids": ids.to(device),
            "attention_mask": mask.to(device),
            "labels": labels.to(device),
        }


def _batch_loss(model: Any, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, int]:
    """Return the summed next-token cross-entropy over labelled tokens and their count."""
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    predicted = logits[:, :-1].flatten(0, 1).float()  # [B, L-1, V] -> [B*(L-1), V]
    target = batch["labels"][:, 1:].flatten()  # [B, L-1] -> [B*(L-1)]
    total = F.cross_entropy(predicted, target, ignore_index=IGNORE_INDEX, reduction="sum")
    return total, int((target != IGNORE_INDEX).sum())


def _dataset_loss(
    model: Any, examples: list[_Example], pad_id: int, batch_size: int, device: torch.device
) -> float:
    model.eval()
    total, count = 0.0, 0
    with torch.inference_mode():
        for batch in _batches(examples, batch_size, pad_id, device):
            with _autocast(device):
                batch_total, batch_count = _batch_loss(model, batch)
            total += float(batch_total)
            count += batch_count
    return total / count


def _autocast(device: torch.device) -> Any:
    # bf16 autocast halves memory and time on GPUs that have it; fp32 elsewhere.
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return nullcontext()


def _progress(enabled: bool, total: int) -> Any:
    bar = progress_bar(enabled, "fine-tuning", fields=("loss",), remaining=False, tty_only=True)
    if bar is not None:
        bar.add_task("finetune", total=total, loss="")
        bar.start()
    return bar
