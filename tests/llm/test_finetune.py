"""LoRA fine-tuning of the tiny local model on chat transcripts, on the CPU."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import peft  # noqa: F401  (a dev extra: missing is a failure)
import pytest
import torch
from peft import PeftModel
from transformers import AutoModelForCausalLM, AutoTokenizer

from celeris.errors import CelerisTypeError, ConfigError, DataError
from celeris.llm.finetune import (
    IGNORE_INDEX,
    FinetuneResult,
    _dataset_loss,
    _encode,
    _encode_all,
    finetune_lora,
    read_chat_dataset,
)

SYSTEM = "You are a quant analyst. Answer in JSON."


def _conversation(i: int) -> dict[str, Any]:
    verdict = "accept" if i % 2 else "reject"
    return {
        "messages": [
            {"role": "system", "content": SYSTEM},
            {"role": "user", "content": f"Rate strategy {i}: sma fast={5 + i} slow={50 + 10 * i}."},
            {"role": "assistant", "content": json.dumps({"verdict": verdict, "score": i / 10})},
        ],
        "meta": {"run": i},
    }


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("finetune") / "train.jsonl"
    path.write_text("".join(json.dumps(_conversation(i)) + "\n" for i in range(6)))
    return path


@pytest.fixture(scope="module")
def trained(
    tiny_model_dir: Path, dataset: Path, tmp_path_factory: pytest.TempPathFactory
) -> FinetuneResult:
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("finetune") / "adapter"
    # A large learning rate: 12 steps must move a random model measurably.
    return finetune_lora(tiny_model_dir, dataset, out, epochs=2, lr=1e-2, seed=0, progress=False)


def test_finetune_lora_tiny_model_loss_decreases(trained: FinetuneResult) -> None:
    assert trained.steps == 12  # 6 conversations x 2 epochs at batch size 1
    assert trained.last_loss < 0.9 * trained.first_loss
    assert 0 < trained.trainable_params < trained.total_params


def test_finetune_lora_writes_adapter_and_settings(trained: FinetuneResult, dataset: Path) -> None:
    assert (trained.out_dir / "adapter_config.json").is_file()
    assert (trained.out_dir / "adapter_model.safetensors").is_file()
    settings = json.loads((trained.out_dir / "celeris_finetune.json").read_text())
    assert settings["dataset"] == str(dataset) and settings["conversations"] == 6
    assert settings["rank"] == 8 and settings["alpha"] == 16 and settings["lr"] == 1e-2
    assert settings["truncated"] == 0
    assert settings["target_modules"] == ["q_proj", "v_proj"]
    assert len(settings["losses"]) == settings["steps"] == trained.steps
    assert settings["first_loss"] == trained.first_loss
    assert settings["last_loss"] == trained.last_loss


# peft 0.21 reads PreTrainedModel.is_gradient_checkpointing, which transformers 5 deprecates with
# a FutureWarning (finetune_lora hides it; PeftModel.from_pretrained here does not).
@pytest.mark.filterwarnings("ignore:`is_gradient_checkpointing` is deprecated:FutureWarning")
def test_finetune_adapter_loads_with_peft_and_changes_logits(
    trained: FinetuneResult, tiny_model_dir: Path, dataset: Path
) -> None:
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    ids = torch.tensor([tokenizer("Rate strategy 3", add_special_tokens=False)["input_ids"]])
    with torch.inference_mode():
        base_logits = base(input_ids=ids).logits
    adapted = PeftModel.from_pretrained(base, trained.out_dir).eval()
    with torch.inference_mode():
        adapted_logits = adapted(input_ids=ids).logits
    assert adapted_logits.shape == base_logits.shape
    assert float((adapted_logits - base_logits).abs().max()) > 1e-2
    # Round trip: the reloaded adapter scores the data exactly as the trained one did.
    examples = _encode_all(tokenizer, read_chat_dataset(dataset), max_length=512)
    reloaded_loss = _dataset_loss(adapted, examples, tokenizer.pad_token_id, 1, torch.device("cpu"))
    assert reloaded_loss == pytest.approx(trained.last_loss, rel=1e-5)


def test_finetune_same_seed_same_losses(
    tiny_model_dir: Path, dataset: Path, tmp_path: Path, trained: FinetuneResult
) -> None:
    rng_before = torch.get_rng_state()
    again = finetune_lora(
        tiny_model_dir, dataset, tmp_path / "again", epochs=2, lr=1e-2, seed=0, progress=False
    )
    assert torch.equal(torch.get_rng_state(), rng_before)  # the caller's RNG is left alone
    assert (again.first_loss, again.last_loss) == (trained.first_loss, trained.last_loss)
    losses = json.loads((tmp_path / "again" / "celeris_finetune.json").read_text())["losses"]
    assert losses == json.loads((trained.out_dir / "celeris_finetune.json").read_text())["losses"]


def test_encode_labels_only_assistant_content_and_end_of_turn(tiny_model_dir: Path) -> None:
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    messages = _conversation(1)["messages"] + [
        {"role": "user", "content": "And strategy 2?"},
        {"role": "assistant", "content": '{"verdict": "reject"}'},
    ]
    example = _encode(tokenizer, messages, max_length=512)
    rendered = tokenizer.apply_chat_template(messages, tokenize=False)
    assert tokenizer.decode(example.input_ids) == rendered
    learned = [
        t
        for t, label in zip(example.input_ids, example.labels, strict=True)
        if label != IGNORE_INDEX
    ]
    assert all(
        label in (IGNORE_INDEX, t)
        for t, label in zip(example.input_ids, example.labels, strict=True)
    )
    expected = messages[2]["content"] + "<|im_end|>\n" + messages[4]["content"] + "<|im_end|>\n"
    assert tokenizer.decode(learned) == expected


def test_encode_long_conversation_keeps_its_end(tiny_model_dir: Path) -> None:
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    messages = _conversation(0)["messages"]
    whole = _encode(tokenizer, messages, max_length=512)
    cut = _encode(tokenizer, messages, max_length=10)
    assert not whole.truncated and cut.truncated
    assert cut.input_ids == whole.input_ids[-10:] and cut.labels == whole.labels[-10:]
    assert tokenizer.decode(cut.input_ids).endswith("<|im_end|>\n")
    assert IGNORE_INDEX not in cut.labels  # the last 10 tokens are all answer


def test_finetune_no_assistant_tokens_within_max_length_raises(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    # The answer is followed by a long user turn, so the last 8 tokens hold no answer token.
    record = _conversation(0)
    record["messages"].append({"role": "user", "content": "and now? " * 20})
    path = tmp_path / "train.jsonl"
    path.write_text(json.dumps(record) + "\n")
    with pytest.raises(DataError, match="max_length=8"):
        finetune_lora(tiny_model_dir, path, tmp_path / "out", max_length=8, progress=False)


@pytest.mark.parametrize(
    ("lines", "match"),
    [
        (["{not json"], r"train\.jsonl:1: not valid JSON"),
        ([None, None, '{"messages": [{"role": "user"'], r"train\.jsonl:3: not valid JSON"),
        ([None, '{"messages": [{"role": "user", "content": "hi"}]}'], r":2: no assistant turn"),
        ([None, '{"meta": {}}'], r":2: expected an object with a non-empty 'messages' list"),
        (["[1, 2]"], r":1: expected an object"),
        ([None, '{"messages": [{"role": "assistant", "content": 5}]}'], r":2: messages\[0\] needs"),
    ],
)
def test_read_chat_dataset_bad_line_raises_with_line_number(
    tmp_path: Path, lines: list[str | None], match: str
) -> None:
    good = json.dumps(_conversation(0))
    path = tmp_path / "train.jsonl"
    path.write_text("\n".join(good if line is None else line for line in lines) + "\n")
    with pytest.raises(DataError, match=match):
        read_chat_dataset(path)


def test_read_chat_dataset_skips_blank_lines_and_ignores_meta(tmp_path: Path) -> None:
    path = tmp_path / "train.jsonl"
    path.write_text(
        "\n" + json.dumps(_conversation(0)) + "\n\n" + json.dumps(_conversation(1)) + "\n"
    )
    conversations = read_chat_dataset(path)
    assert len(conversations) == 2
    assert conversations[1] == _conversation(1)["messages"]


def test_read_chat_dataset_missing_or_empty_file_raises(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        read_chat_dataset(tmp_path / "nope.jsonl")
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n  \n")
    with pytest.raises(DataError, match="is empty"):
        read_chat_dataset(empty)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"epochs": 0}, "epochs"),
        ({"lr": 0.0}, "lr"),
        ({"rank": 0}, "rank"),
        ({"max_length": 1}, "max_length"),
        ({"batch_size": 0}, "batch_size"),
        ({"alpha": 0}, "alpha must be > 0"),
        ({"lr": float("nan")}, "lr must be finite"),
        ({"target_modules": ["no_such_layer"]}, "LoRA cannot adapt"),
    ],
)
def test_finetune_bad_settings_raise_config_error(
    tiny_model_dir: Path, dataset: Path, tmp_path: Path, kwargs: dict[str, Any], match: str
) -> None:
    with pytest.raises(ConfigError, match=match):
        finetune_lora(tiny_model_dir, dataset, tmp_path / "out", progress=False, **kwargs)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"epochs": 1.5}, "epochs must be an int >= 1, got float 1.5"),
        ({"batch_size": True}, "batch_size must be an int >= 1, got bool True"),
        ({"lr": "1e-4"}, "lr must be a real number > 0"),
    ],
)
def test_finetune_wrong_type_settings_raise_type_error(
    tiny_model_dir: Path, dataset: Path, tmp_path: Path, kwargs: dict[str, Any], match: str
) -> None:
    with pytest.raises(CelerisTypeError, match=match):
        finetune_lora(tiny_model_dir, dataset, tmp_path / "out", progress=False, **kwargs)


def test_finetune_missing_model_raises_config_error(dataset: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"config\.json is missing"):
        finetune_lora(tmp_path / "no-model", dataset, tmp_path / "out", progress=False)


def test_finetune_batches_of_two_pad_without_changing_the_loss(
    tiny_model_dir: Path, dataset: Path, tmp_path: Path
) -> None:
    # Before training both runs measure the same dataset loss: padding must not leak into it.
    one = finetune_lora(tiny_model_dir, dataset, tmp_path / "b1", lr=1e-2, progress=False)
    two = finetune_lora(
        tiny_model_dir, dataset, tmp_path / "b2", lr=1e-2, batch_size=4, progress=False
    )
    assert two.steps == 2 and one.steps == 6
    assert two.first_loss == pytest.approx(one.first_loss, rel=1e-5)
    assert two.last_loss < two.first_loss
