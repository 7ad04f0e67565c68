"""Keep a prompt inside a token budget by shrinking and dropping its sections in priority order.

Sections render at several levels of detail (0 = most detailed), e.g. a sliding-window table of
20, 10, 5 or 0 windows. :class:`ContextBuilder` renders the template with every section at its
most detailed level and, while the messages exceed the budget, shortens the lowest-priority
section that can still shrink (the largest first on ties), then drops optional sections.

Tokens are counted with the model's tokenizer when one is given (``tokenizer.json`` or a model
directory, ``CELERIS_LLM_TOKENIZER``); otherwise with :func:`estimate_tokens`, a deliberately
conservative estimate of one token per 2 characters. BPE tokenizers average 3.5-4.5 characters
per token on English prose, but JSON schemas and number tables are denser: SmolLM2's tokenizer
measured 2.2 characters per token on our prompts (schema instruction included), so a prompt
that fits the estimate fits the model.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import BaseModel

from celeris.errors import ConfigError
from celeris.llm.prompts import PromptTemplate
from celeris.llm.schemas import with_schema_instruction

TokenCounter = Callable[[str], int]
CHARS_PER_TOKEN = 2.0
# Chat templates wrap each message in a few special tokens (role markers, separators).
TOKENS_PER_MESSAGE = 8
OMITTED = "(omitted to fit the token budget)"


def estimate_tokens(text: str) -> int:
    """Return a conservative token count of ``text``: ``ceil(len(text) / 2)``."""
    return math.ceil(len(text) / CHARS_PER_TOKEN)


def token_counter(tokenizer: str | Path | None = None) -> TokenCounter:
    """Return an exact counter for a ``tokenizer.json`` (or a directory holding one), else the
    conservative estimate.

    Raises
    ------
    ConfigError
        ``tokenizer`` is given but holds no readable ``tokenizer.json``.
    """
    if tokenizer is None:
        return estimate_tokens
    path = Path(tokenizer).expanduser()
    if path.is_dir():
        path = path / "tokenizer.json"
    if not path.is_file():
        raise ConfigError(f"tokenizer {tokenizer}: no tokenizer.json there")
    try:
        from tokenizers import Tokenizer

        tok = Tokenizer.from_file(str(path))
    except Exception as exc:  # the tokenizers library raises bare Exceptions on bad files
        raise ConfigError(f"tokenizer {path}: {exc}") from None

    def count(text: str) -> int:
        return len(tok.encode(text, add_special_tokens=False).ids)

    return count


@dataclass(frozen=True)
class Section:
    """A named block of context rendered at ``levels`` levels of detail (0 = most)."""

    name: str
    render: Callable[[int], str]
    levels: int = 1
    priority: int = 0
    required: bool = False


@dataclass(frozen=True)
class Context:
    """Rendered messages that fit the budget, and what was shortened to get there."""

    messages: list[dict[str, str]]
    tokens: int
    budget: int
    levels: dict[str, int] = field(default_factory=dict)
    dropped: tuple[str, ...] = ()


class ContextBuilder:
    """Fill a :class:`PromptTemplate` with sections so that the messages fit ``budget`` tokens.

    Parameters
    ----------
    template
        The template; each section's name is one of its placeholders.
    budget
        Token budget of all rendered messages together.
    counter
        Token counter (default :func:`estimate_tokens`).
    schema
        The answer schema; its instruction (appended to the system message by the client) is
        part of the prompt, so it is rendered and counted here too. May be set after creation.
    """

    def __init__(
        self,
        template: PromptTemplate,
        budget: int,
        counter: TokenCounter | None = None,
        schema: type[BaseModel] | None = None,
    ) -> None:
        if budget < 1:
            raise ConfigError(f"token budget must be >= 1, got {budget}")
        self.template = template
        self.budget = budget
        self.counter = counter or estimate_tokens
        self.schema = schema
        self._sections: dict[str, Section] = {}

    def add(
        self,
        name: str,
        render: Callable[[int], str] | str,
        *,
        levels: int = 1,
        priority: int = 0,
        required: bool = False,
    ) -> ContextBuilder:
        """Add a section; a plain string is a one-level section."""
        if name in self._sections:
            raise ConfigError(f"context section {name!r} added twice")
        if levels < 1:
            raise ConfigError(f"section {name!r}: levels must be >= 1, got {levels}")
        fn = (lambda _level, text=render: text) if isinstance(render, str) else render
        self._sections[name] = Section(name, fn, levels, priority, required)
        return self

    def count(self, messages: list[dict[str, str]]) -> int:
        return sum(self.counter(m["content"]) + TOKENS_PER_MESSAGE for m in messages)

    def build(self) -> Context:
        """Render within the budget.

        Raises
        ------
        ConfigError
            Even with every section at its shortest and every optional one dropped, the prompt
            exceeds the budget.
        """
        levels = {name: 0 for name in self._sections}
        dropped: set[str] = set()
        cache: dict[tuple[str, int], str] = {}

        def text(name: str) -> str:
            if name in dropped:
                return OMITTED
            key = (name, levels[name])
            if key not in cache:
                cache[key] = self._sections[name].render(levels[name])
            return cache[key]

        while True:
            messages = self.template.render(**{n: text(n) for n in self._sections})
            if self.schema is not None:
                messages = with_schema_instruction(messages, self.schema)
            tokens = self.count(messages)
            if tokens <= self.budget:
                return Context(messages, tokens, self.budget, dict(levels), tuple(sorted(dropped)))
            shrinkable = [
                s
                for s in self._sections.values()
                if s.name not in dropped and (levels[s.name] < s.levels - 1 or not s.required)
            ]
            if not shrinkable:
                raise ConfigError(
                    f"prompt {self.template.id} needs {tokens} tokens even with every section at "
                    f"its shortest and the optional ones dropped; the budget is {self.budget} "
                    "(raise CELERIS_LLM_CONTEXT_TOKENS or use a model with a longer context)"
                )
            victim = min(shrinkable, key=lambda s: (s.priority, -self.counter(text(s.name))))
            if levels[victim.name] < victim.levels - 1:
                levels[victim.name] += 1
            else:
                dropped.add(victim.name)
