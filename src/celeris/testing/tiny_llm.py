"""An in-process chat model on transformers, with JSON-schema-constrained decoding by llguidance.

Two jobs: :func:`build_tiny_model` writes a tiny random causal LM (a byte-level BPE tokenizer
trained in memory plus a two-layer Llama) that loads offline, so the LLM code paths are tested
without downloads; :class:`LocalChatModel` runs any local causal LM directory as a chat model
whose answers can be held to a JSON schema, which is what
:class:`celeris.testing.llm_server.OpenAICompatibleServer` serves over the OpenAI HTTP API.

A random model writes nonsense, but constrained decoding makes that nonsense schema-valid JSON,
which is exactly what a test of the client's parsing, validation and re-ask logic needs.
"""

from __future__ import annotations

import contextlib
import dataclasses
import inspect
import json
import secrets
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Literal

import llguidance
import numpy as np
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedTokenizerFast,
)
from transformers.utils import logging as hf_logging

from celeris.checks import check_int, check_real
from celeris.compute.device import resolve_torch_device
from celeris.errors import ConfigError

__all__ = [
    "CHAT_TEMPLATE",
    "Completion",
    "ContextLengthError",
    "LocalChatModel",
    "SchemaError",
    "build_tiny_model",
    "grammar_for_response_format",
]

PAD_TOKEN = "<|pad|>"
TURN_START = "<|im_start|>"
TURN_END = "<|im_end|>"

# ChatML: the same turn markers as Qwen and SmolLM2, so prompts rendered for the tiny model look
# like the ones a real local model sees. The end-of-turn marker doubles as the EOS token.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

# The JSON the analyst reads and writes and the words around it. Merges learned from this text make
# JSON punctuation, keys and trading words single tokens, as in a real model's vocabulary.
_WORD_TEXT = (
    "buy sell hold long short flat entry exit stop loss take profit fees slippage sharpe "
    "sortino drawdown volatility momentum mean reversion breakout trend regime window fast "
    "slow signal moving average crossover rsi macd bollinger atr volume price open high low "
    "close return equity position size leverage risk reward walk forward train test overfit "
    "deflated ratio parameter strategy bitcoin ether btc eth usdt hourly daily weekly market "
    "order limit"
)
_JSON_SNIPPETS = (
    '{"action": "buy", "size": 0.25, "confidence": 0.8, "reason": "momentum is positive"}',
    '{"strategy": "ma_cross", "params": {"fast": 10, "slow": 50}, "sharpe": 1.42}',
    '{"proposals": [{"name": "rsi", "window": 14, "lower": 30, "upper": 70}]}',
    '{"verdict": "reject", "reasons": ["overfit", "drawdown too deep"], "score": -0.5}',
    '{"symbol": "BTC/USDT", "timeframe": "1h", "fees": 0.001, "slippage": 0.0005}',
    '{"metrics": {"total_return": 0.37, "max_drawdown": -0.21, "trades": 118}}',
    '[{"time": "2024-01-01T00:00:00Z", "close": 42150.5, "volume": 1234.75}]',
    '{"ok": true, "error": null, "values": [1, 2, 3, -4.5e-3]}',
)


def _training_corpus() -> Iterator[str]:
    """Yield the tokenizer's training text: JSON snippets and sentences of trading words."""
    for _ in range(20):
        yield from _JSON_SNIPPETS
    vocabulary = _WORD_TEXT.split()
    n = len(vocabulary)
    # A fixed walk through the word list (stride 7 is coprime with its length), so the text, and
    # hence the learned merges, never depend on a random state.
    for start in range(n):
        words = [vocabulary[(start + 7 * k) % n] for k in range(12)]
        yield " ".join(words) + "."
        yield json.dumps({words[0]: words[1], words[2]: start, words[3]: [words[4], start / 8]})


@contextlib.contextmanager
def _no_progress_bars() -> Iterator[None]:
    # transformers draws tqdm bars while loading and saving weights; a tiny model gains nothing
    # from them and they clutter test and server logs.
    was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled:
            hf_logging.enable_progress_bar()


def _train_tokenizer(vocab_size: int) -> PreTrainedTokenizerFast:
    bpe = Tokenizer(models.BPE())
    # Byte-level so that every string, and every byte llguidance may force, is encodable.
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[PAD_TOKEN, TURN_START, TURN_END],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator(_training_corpus(), trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=bpe, eos_token=TURN_END, pad_token=PAD_TOKEN
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


# Logit offsets of the tiny model's prior. Sampled at temperature 0.7 the end of turn comes after
# about 10 tokens of free text and a string closes after a few tokens; greedy decoding prefers, in
# this order, ending the turn, closing a string, closing an object or array, a comma.
_PRIOR_END_OF_TURN = 3.5
_PRIOR_CLOSE_STRING = 3.0
_PRIOR_CLOSE = 2.0
_PRIOR_COMMA = 1.5
# Llama's default init (std 0.02) leaves a tiny model's layers almost silent, so its answer would
# hardly depend on the prompt. At 0.2 attention and MLP outputs are as large as the embeddings:
# a changed prompt (a re-ask quoting a validation error) changes the sampled answer.
_WEIGHT_STD = 0.2
_BIAS_CHANNEL_VALUE = 2.0
# Spread of the random part of the logits: below the prior, so greedy decoding follows it, but
# enough to make sampled text vary.
_RANDOM_LOGIT_STD = 0.7


def build_tiny_model(
    path: str | Path,
    *,
    seed: int = 0,
    vocab_size: int = 768,
    hidden_size: int = 64,
    num_layers: int = 2,
    num_heads: int = 4,
    max_positions: int = 4096,
) -> Path:
    """Write a tiny random causal LM and its tokenizer to ``path`` and return the directory.

    The tokenizer is a byte-level BPE trained in memory on a built-in corpus of JSON and trading
    words, with a ChatML chat template and ``<|im_end|>`` as EOS; the model is a Llama with random
    weights plus a fixed prior that favours ending turns, strings, objects and arrays (see
    :func:`_write_token_prior`), so that its answers, free or schema-constrained, end well within
    a few hundred tokens. Both are written with ``save_pretrained``, so
    ``AutoTokenizer.from_pretrained(path)`` and ``AutoModelForCausalLM.from_pretrained(path)``
    load them offline.

    Parameters
    ----------
    path
        Directory to create (or overwrite files in).
    seed
        Seed of the weight initialisation; the same seed writes the same weights.
    vocab_size
        Target vocabulary size of the BPE tokenizer, between 300 and 4096 (256 byte symbols and
        3 special tokens come first; the corpus may yield fewer merges than asked for).
    hidden_size, num_layers, num_heads
        Width, depth and attention heads of the Llama; ``hidden_size`` must be a multiple of
        ``num_heads`` and at least 16.
    max_positions
        Longest prompt plus completion, in tokens (RoPE, so it costs no parameters).

    Returns
    -------
    Path
        ``path`` as a :class:`~pathlib.Path`.

    Notes
    -----
    Greedy decoding (temperature 0) of this model ends a free-text turn at once (an empty answer)
    and fills a schema with the shortest values it can; sampling gives varied text.
    """
    vocab_size = check_int("vocab_size", vocab_size, minimum=300, maximum=4096)
    hidden_size = check_int("hidden_size", hidden_size, minimum=16)
    num_layers = check_int("num_layers", num_layers, minimum=1)
    num_heads = check_int("num_heads", num_heads, minimum=1)
    if hidden_size % num_heads:
        raise ConfigError(
            f"hidden_size ({hidden_size}) must be a multiple of num_heads ({num_heads})"
        )
    out = Path(path)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = _train_tokenizer(vocab_size)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=2 * hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        num_key_value_heads=num_heads,
        max_position_embeddings=max_positions,
        initializer_range=_WEIGHT_STD,
        # Untied: the output embedding carries the token prior, the input embedding does not.
        tie_word_embeddings=False,
        bos_token_id=None,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    # A private RNG stream: building a model must not reseed the caller's torch state.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LlamaForCausalLM(config)
        _write_token_prior(model, tokenizer)
    with _no_progress_bars():
        tokenizer.save_pretrained(out)
        model.save_pretrained(out)
    return out


def _write_token_prior(model: LlamaForCausalLM, tokenizer: PreTrainedTokenizerFast) -> None:
    """Give the random model a per-token logit offset without adding a parameter to Llama.

    Llama's output layer has no bias, so hidden channel 0 plays one: every input embedding holds
    the same value there and no layer writes to it (row 0 of each ``o_proj`` and ``down_proj`` is
    zero), so channel 0 of the final normalised state is positive and nearly constant (within
    about 15%). Column 0 of the output embedding, divided by its mean on the corpus, is then the
    offset of each token's logit. The tokens of the prior get no random part, so their order
    (which greedy decoding follows) holds in every context.
    """
    prior = torch.zeros(model.config.vocab_size)  # [V]
    for token_id in range(len(tokenizer)):
        piece = tokenizer.decode([token_id])
        if piece and set(piece) <= set('"}]'):
            prior[token_id] = _PRIOR_CLOSE_STRING if '"' in piece else _PRIOR_CLOSE
        elif piece == ",":
            prior[token_id] = _PRIOR_COMMA
    prior[tokenizer.eos_token_id] = _PRIOR_END_OF_TURN
    corpus = " ".join(_training_corpus())
    sample = tokenizer(corpus, add_special_tokens=False)["input_ids"][:512]
    with torch.no_grad():
        embedding = model.model.embed_tokens.weight  # [V, H]
        embedding.normal_(0.0, 1.0)
        embedding[:, 0] = _BIAS_CHANNEL_VALUE
        for layer in model.model.layers:
            layer.self_attn.o_proj.weight[0] = 0.0  # [H, H]: nothing writes channel 0
            layer.mlp.down_proj.weight[0] = 0.0  # [H, I]
        output = model.lm_head.weight  # [V, H]
        output.normal_(0.0, 1.0)
        output[prior != 0] = 0.0
        output[:, 0] = 0.0
        hidden = model.model(input_ids=torch.tensor([sample])).last_hidden_state[0]  # [T, H]
        random_logits = hidden @ output.T  # [T, H] @ [H, V] -> [T, V]
        output *= _RANDOM_LOGIT_STD / random_logits[:, prior == 0].std()
        output[:, 0] = prior / hidden[:, 0].mean()


@dataclasses.dataclass(frozen=True)
class Completion:
    """One chat completion: the text and what it cost.

    ``completion_tokens`` counts every sampled token, the final end-of-turn token included.
    ``finish_reason`` is ``"stop"`` when the model ended its turn (or the grammar was complete) and
    ``"length"`` when the token budget ran out first.
    """

    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: Literal["stop", "length"]


class ContextLengthError(ConfigError):
    """The prompt leaves no room for a completion in the model's context window."""

    code = "context_length_exceeded"  # OpenAI's error code, reported by the HTTP server


class SchemaError(ConfigError):
    """A response-format JSON schema that llguidance cannot compile into a grammar."""

    code = "invalid_json_schema"


def grammar_for_response_format(response_format: dict[str, Any] | None) -> str | None:
    """Return the llguidance grammar an OpenAI ``response_format`` asks for, or None for free text.

    Accepted forms: ``None`` or ``{"type": "text"}`` (free text); ``{"type": "json_schema",
    "json_schema": {"schema": {...}}}`` (OpenAI); ``{"type": "json_object", "schema": {...}}``
    (llama.cpp's server); ``{"type": "json_object"}`` (any JSON object).

    Raises
    ------
    ConfigError
        If the format is not one of those.
    """
    if response_format is None:
        return None
    if not isinstance(response_format, dict):
        raise ConfigError(
            f"response_format must be an object, got {type(response_format).__name__}"
        )
    kind = response_format.get("type")
    if kind == "text":
        return None
    if kind == "json_schema":
        spec = response_format.get("json_schema")
        if not isinstance(spec, dict) or not isinstance(spec.get("schema"), dict):
            raise ConfigError("response_format json_schema needs a 'json_schema.schema' object")
        schema = spec["schema"]
    elif kind == "json_object":
        schema = response_format.get("schema", {"type": "object"})
        if not isinstance(schema, dict):
            raise ConfigError("response_format json_object 'schema' must be an object")
    else:
        raise ConfigError(
            f"unsupported response_format type {kind!r}; "
            "choose one of 'text', 'json_object', 'json_schema'"
        )
    # Compact JSON: with flexible whitespace a random model spends most of its budget on spaces.
    return llguidance.LLMatcher.grammar_from_json_schema(
        schema, defaults={"whitespace_flexible": False}
    )


class LocalChatModel:
    """A local causal LM directory served as a chat model, optionally held to a JSON schema.

    Parameters
    ----------
    path
        Directory written by ``save_pretrained`` (for example by :func:`build_tiny_model`) with a
        fast tokenizer that has a chat template and an EOS token.
    device
        ``"cpu"``, ``"cuda"`` or ``"auto"``.
    max_new_tokens
        Completion budget when a request does not set ``max_tokens``.
    threads
        torch CPU threads (a process-wide setting of torch).

    Notes
    -----
    Generation holds a lock, so one instance serves concurrent callers one at a time.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        device: str = "cpu",
        max_new_tokens: int = 512,
        threads: int = 1,
    ) -> None:
        max_new_tokens = check_int("max_new_tokens", max_new_tokens, minimum=1)
        threads = check_int("threads", threads, minimum=1)
        self.path = Path(path)
        if not (self.path / "config.json").is_file():
            raise ConfigError(f"no model at {self.path}: config.json is missing")
        torch.set_num_threads(threads)
        self.device = resolve_torch_device(device)
        self.max_new_tokens = max_new_tokens
        with _no_progress_bars():
            self.tokenizer = AutoTokenizer.from_pretrained(self.path)
            self.model = AutoModelForCausalLM.from_pretrained(self.path)
        # transformers wraps PreTrainedModel.to in a decorator whose stub mypy misreads.
        self.model.to(self.device)  # type: ignore[arg-type]
        self.model.eval()
        if self.tokenizer.eos_token_id is None or not self.tokenizer.chat_template:
            raise ConfigError(
                f"the tokenizer at {self.path} needs an EOS token and a chat template"
            )
        self.eos_token_id: int = self.tokenizer.eos_token_id
        self.vocab_size: int = self.model.get_output_embeddings().weight.shape[0]
        self.context_length: int = int(getattr(self.model.config, "max_position_embeddings", 2048))
        # The key-value cache is ``cache`` in newer transformers and ``past_key_values`` (now
        # deprecated, a FutureWarning) before; pass and read it under the name this one uses.
        forward_args = inspect.signature(self.model.forward).parameters
        self._cache_name = "cache" if "cache" in forward_args else "past_key_values"
        # llguidance wants the Rust tokenizer's JSON (this is what llguidance.hf.from_tokenizer
        # does, minus its isinstance check that transformers 5's TokenizersBackend may fail).
        backend = self.tokenizer.backend_tokenizer
        self._ll_tokenizer = llguidance.LLTokenizer(
            backend.to_str(), n_vocab=self.vocab_size, eos_token=self.eos_token_id
        )
        # Free text must not contain control tokens other than the end of turn.
        self._banned = torch.tensor(
            [i for i in self.tokenizer.all_special_ids if i != self.eos_token_id],
            dtype=torch.long,
        )
        self._lock = threading.Lock()

    @property
    def name(self) -> str:
        """The model's name: the name of its directory."""
        return self.path.name

    def count_tokens(self, text: str) -> int:
        """Return the number of tokens ``text`` takes with this model's tokenizer."""
        return len(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def prompt_tokens(self, messages: list[dict[str, Any]]) -> list[int]:
        """Return the token ids of the chat prompt ``messages`` make (template and the
        assistant turn's opening included): exactly what :meth:`complete` feeds the model."""
        return self._encode_prompt(messages)

    def text_tokens(self, text: str) -> list[int]:
        """Return the token ids of ``text`` alone (no special tokens)."""
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def complete(
        self,
        messages: list[dict[str, Any]],
        *,
        response_format: dict[str, Any] | None = None,
        max_tokens: int | None = None,
        temperature: float = 0.7,
        seed: int | None = None,
        on_text: Callable[[str], None] | None = None,
    ) -> Completion:
        """Answer a conversation with the next assistant turn.

        Parameters
        ----------
        messages
            OpenAI-style messages, ``{"role": ..., "content": str}``.
        response_format
            OpenAI ``response_format``; a JSON schema (see :func:`grammar_for_response_format`)
            constrains decoding so the text always parses and validates, unless the budget runs
            out first (``finish_reason == "length"``).
        max_tokens
            Completion budget; defaults to ``max_new_tokens`` of the constructor.
        temperature
            0 decodes greedily; above 0 samples from ``softmax(logits / temperature)``.
        seed
            Seed of the sampler: the same seed, prompt and settings give the same text. None
            draws a fresh seed.
        on_text
            Called with each new piece of text as soon as it decodes to whole characters
            (streaming).

        Returns
        -------
        Completion

        Raises
        ------
        ConfigError
            On a malformed message list, response format or setting.
        CelerisTypeError
            ``temperature`` is not a number or ``max_tokens`` not an int.
        ContextLengthError
            If the prompt leaves no room in the context window.
        """
        temperature = check_real("temperature", temperature, minimum=0)
        budget = self.max_new_tokens if max_tokens is None else max_tokens
        budget = check_int("max_tokens", budget, minimum=1)
        prompt_ids = self._encode_prompt(messages)
        room = self.context_length - len(prompt_ids)
        if room < 1:
            raise ContextLengthError(
                f"the prompt takes {len(prompt_ids)} tokens; the context window of "
                f"{self.name!r} holds {self.context_length}"
            )
        matcher = self._matcher(grammar_for_response_format(response_format))
        generator = torch.Generator(device="cpu")
        generator.manual_seed(secrets.randbits(63) if seed is None else seed)
        with self._lock, torch.inference_mode():
            return self._generate(
                prompt_ids, matcher, min(budget, room), temperature, generator, on_text
            )

    def _encode_prompt(self, messages: list[dict[str, Any]]) -> list[int]:
        if not isinstance(messages, list) or not messages:
            raise ConfigError("messages must be a non-empty list")
        for i, message in enumerate(messages):
            if not isinstance(message, dict) or not isinstance(message.get("role"), str):
                raise ConfigError(f"messages[{i}] must be an object with a string 'role'")
            if not isinstance(message.get("content"), str):
                raise ConfigError(f"messages[{i}].content must be a string")
        text = self.tokenizer.apply_chat_template(
            messages, tokenize=False, add_generation_prompt=True
        )
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def _matcher(self, grammar: str | None) -> llguidance.LLMatcher | None:
        if grammar is None:
            return None
        error = llguidance.LLMatcher.validate_grammar(grammar, self._ll_tokenizer)
        if error:
            raise SchemaError(f"the response schema cannot be compiled: {error}")
        # log_level=0: grammar warnings are returned by validate_grammar, not printed to stderr.
        return llguidance.LLMatcher(self._ll_tokenizer, grammar, log_level=0)

    def _generate(
        self,
        prompt_ids: list[int],
        matcher: llguidance.LLMatcher | None,
        budget: int,
        temperature: float,
        generator: torch.Generator,
        on_text: Callable[[str], None] | None,
    ) -> Completion:
        tokens: list[int] = []
        text = ""
        finish: Literal["stop", "length"] = "length"
        inputs = torch.tensor([prompt_ids], device=self.device)  # [1, T]
        cache = None
        for _ in range(budget):
            out = self.model(input_ids=inputs, use_cache=True, **{self._cache_name: cache})
            cache = out[self._cache_name]
            logits = out.logits[0, -1, : self.vocab_size].float().cpu()  # [1, T, V] -> [V]
            if matcher is None:
                logits[self._banned] = float("-inf")
            else:
                # One byte per token: 0 forbidden, 200 allowed (llguidance's logit-bias form).
                allowed = np.frombuffer(matcher.compute_logit_bias(), dtype=np.uint8)
                logits[torch.from_numpy(allowed[: self.vocab_size] == 0)] = float("-inf")
            token = self._pick(logits, temperature, generator)
            tokens.append(token)
            if token == self.eos_token_id:
                finish = "stop"
                break
            if matcher is not None and not matcher.consume_token(token):
                raise RuntimeError(f"llguidance rejected an allowed token: {matcher.get_error()}")
            text = self._emit(tokens, text, on_text)
            if matcher is not None and matcher.is_stopped():
                # The grammar is complete and only EOS could follow: stop without sampling it.
                finish = "stop"
                break
            inputs = torch.tensor([[token]], device=self.device)  # [1, 1]
        content = [t for t in tokens if t != self.eos_token_id]
        final = str(self.tokenizer.decode(content, skip_special_tokens=True))
        if on_text is not None and final != text and final.startswith(text):
            on_text(final[len(text) :])  # a trailing partial character, flushed as replaced
        return Completion(final, len(prompt_ids), len(tokens), finish)

    def _emit(self, tokens: list[int], sent: str, on_text: Callable[[str], None] | None) -> str:
        if on_text is None:
            return sent
        # Byte-level tokens can split a UTF-8 character; hold text back until it is whole.
        decoded = str(self.tokenizer.decode(tokens, skip_special_tokens=True))
        if decoded.endswith("\ufffd") or not decoded.startswith(sent) or decoded == sent:
            return sent
        on_text(decoded[len(sent) :])
        return decoded

    @staticmethod
    def _pick(logits: torch.Tensor, temperature: float, generator: torch.Generator) -> int:
        if temperature == 0:
            return int(torch.argmax(logits))
        probs = torch.softmax(logits / temperature, dim=-1)
        return int(torch.multinomial(probs, 1, generator=generator))
