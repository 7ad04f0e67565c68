"""Prompt templates kept as versioned files, rendered strictly with the real numbers.

A template is ``prompts/<name>.v<version>.md``: a front matter block, then a ``[system]`` and a
``[user]`` part with ``$placeholders``::

    ---
    name: strategy_analysis
    version: 1
    description: what the template asks
    ---
    [system]
    You are ...
    [user]
    Strategy $strategy on $market ...

Rendering fails if a placeholder has no value or a value has no placeholder, so a template and
the code that fills it cannot drift apart silently. ``$CELERIS_PROMPTS_DIR`` may hold a user's
own versions; they are searched first. The audit log records each template's ``id``
(``name@vN``) and the sha256 of its text, so a run names exactly the words the model read.
"""

from __future__ import annotations

import hashlib
import os
import re
import string
from dataclasses import dataclass
from pathlib import Path

from celeris.errors import ConfigError, did_you_mean

PACKAGE_DIR = Path(__file__).with_name("prompts")
_FILE = re.compile(r"^(?P<name>[a-z0-9_]+)\.v(?P<version>\d+)\.md$")


@dataclass(frozen=True)
class PromptTemplate:
    """A versioned system + user prompt with ``$placeholders``."""

    name: str
    version: int
    description: str
    system: str
    user: str
    path: Path

    @property
    def id(self) -> str:
        return f"{self.name}@v{self.version}"

    @property
    def sha256(self) -> str:
        return hashlib.sha256(f"{self.system}\n{self.user}".encode()).hexdigest()

    @property
    def placeholders(self) -> frozenset[str]:
        names: set[str] = set()
        for text in (self.system, self.user):
            for m in string.Template.pattern.finditer(text):
                name = m.group("named") or m.group("braced")
                if name:
                    names.add(name)
        return frozenset(names)

    def render(self, **values: object) -> list[dict[str, str]]:
        """Return the chat messages with every placeholder filled.

        Raises
        ------
        ConfigError
            A placeholder without a value, or a value without a placeholder.
        """
        missing = self.placeholders - values.keys()
        unused = values.keys() - self.placeholders
        if missing or unused:
            raise ConfigError(
                f"prompt {self.id} ({self.path.name}): "
                + "; ".join(
                    part
                    for part in (
                        f"no value for ${', $'.join(sorted(missing))}" if missing else "",
                        f"no placeholder for {', '.join(sorted(unused))}" if unused else "",
                    )
                    if part
                )
            )
        text = {k: str(v) for k, v in values.items()}
        return [
            {"role": "system", "content": string.Template(self.system).substitute(text)},
            {"role": "user", "content": string.Template(self.user).substitute(text)},
        ]


def _search_dirs() -> list[Path]:
    user = os.environ.get("CELERIS_PROMPTS_DIR")
    return [Path(user).expanduser(), PACKAGE_DIR] if user else [PACKAGE_DIR]


def available_prompts() -> dict[str, list[int]]:
    """Return every template name with its versions, lowest first."""
    found: dict[str, set[int]] = {}
    for folder in _search_dirs():
        if folder.is_dir():
            for path in folder.iterdir():
                m = _FILE.match(path.name)
                if m:
                    found.setdefault(m["name"], set()).add(int(m["version"]))
    return {name: sorted(v) for name, v in sorted(found.items())}


def load_prompt(name: str, version: int | None = None) -> PromptTemplate:
    """Return template ``name`` at ``version`` (default: the newest).

    Raises
    ------
    ConfigError
        An unknown name or version, or a file that breaks the template format.
    """
    known = available_prompts()
    if name not in known:
        raise ConfigError(
            f"no prompt template {name!r}{did_you_mean(name, known)}; "
            f"templates: {', '.join(known) or 'none'}"
        )
    version = known[name][-1] if version is None else version
    if version not in known[name]:
        raise ConfigError(
            f"prompt {name!r} has no version {version}; versions: "
            + ", ".join(map(str, known[name]))
        )
    for folder in _search_dirs():
        path = folder / f"{name}.v{version}.md"
        if path.is_file():
            return parse_template(path)
    raise ConfigError(f"prompt {name}.v{version}.md vanished while loading")  # pragma: no cover


def parse_template(path: Path) -> PromptTemplate:
    """Parse one template file (see the module docstring for the format)."""
    text = path.read_text(encoding="utf-8")
    m = re.match(r"^---\n(?P<meta>.*?)\n---\n(?P<body>.*)$", text, re.S)
    if not m:
        raise ConfigError(f"prompt file {path}: must start with a --- front matter block ---")
    meta: dict[str, str] = {}
    for line in m["meta"].splitlines():
        key, sep, value = line.partition(":")
        if not sep:
            raise ConfigError(f"prompt file {path}: front matter line {line!r} is not key: value")
        meta[key.strip()] = value.strip()
    parts = re.split(r"^\[(system|user)\]\s*$", m["body"], flags=re.M)
    sections = dict(zip(parts[1::2], (p.strip("\n") for p in parts[2::2]), strict=True))
    for key in ("name", "version"):
        if key not in meta:
            raise ConfigError(f"prompt file {path}: front matter lacks {key!r}")
    for part in ("system", "user"):
        if not sections.get(part, "").strip():
            raise ConfigError(f"prompt file {path}: no [{part}] part")
    fm = _FILE.match(path.name)
    if fm is None or fm["name"] != meta["name"] or int(fm["version"]) != int(meta["version"]):
        raise ConfigError(
            f"prompt file {path}: file name must be {meta['name']}.v{meta['version']}.md"
        )
    return PromptTemplate(
        name=meta["name"],
        version=int(meta["version"]),
        description=meta.get("description", ""),
        system=sections["system"],
        user=sections["user"],
        path=path,
    )
