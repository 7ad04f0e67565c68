"""Instruction-tuning data from audited optimisation runs: the prompt and its verified outcome.

Each LLM round of a run becomes one chat example: the system and user messages the model read,
and as the assistant turn the answer *restricted to the proposals that were accepted* out of
sample (the verified outcome), so fine-tuning teaches what held up, not what was merely said.
Rounds with nothing accepted are skipped unless ``include_rejected=True``, in which case they
are written with the original answer and ``meta.accepted = 0`` (for preference or reward data).
Every example's ``meta`` keeps the run, round, model, template and each proposal's decision.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from celeris.data.atomic import atomic_write_text
from celeris.errors import DataError
from celeris.llm.audit import read_audit, runs


def examples_from_events(
    events: list[dict[str, Any]], *, include_rejected: bool = False
) -> list[dict[str, Any]]:
    """Return the chat examples of one or more runs' audit events (see the module docstring)."""
    out = []
    for run_id, evs in runs(events):
        prompts = {e["round"]: e for e in evs if e["event"] == "prompt"}
        answers = {e["round"]: e for e in evs if e["event"] == "answer" and e.get("parsed")}
        decisions: dict[int, list[dict[str, Any]]] = {}
        for e in evs:
            if e["event"] == "decision" and e.get("source") == "llm":
                decisions.setdefault(e["round"], []).append(e)
        for rnd in sorted(answers):
            prompt, answer = prompts.get(rnd), answers[rnd]
            if prompt is None:
                continue
            parsed = answer["parsed"]
            outcome = decisions.get(rnd, [])
            accepted_keys = {_key(d["params"]) for d in outcome if d.get("accepted")}
            kept = [
                p
                for p in parsed.get("proposals", [])
                if any(_covers(p["params"], k) for k in accepted_keys)
            ]
            if not kept and not include_rejected:
                continue
            target = {**parsed, "proposals": kept} if kept else parsed
            messages = [m for m in prompt["messages"] if m.get("role") in ("system", "user")] + [
                {"role": "assistant", "content": json.dumps(target, ensure_ascii=False)}
            ]
            out.append(
                {
                    "messages": messages,
                    "meta": {
                        "run_id": run_id,
                        "round": rnd,
                        "model": answer.get("model"),
                        "template": prompt.get("template"),
                        "template_sha256": prompt.get("template_sha256"),
                        "accepted": len(kept),
                        "outcomes": [
                            {
                                "params": d["params"],
                                "accepted": d.get("accepted"),
                                "decision": d.get("reason"),
                                "in_sample": d.get("in_sample"),
                                "out_of_sample": d.get("out_of_sample"),
                                "dsr": d.get("dsr"),
                            }
                            for d in outcome
                        ],
                    },
                }
            )
    return out


def export_dataset(
    audits: Iterable[str | Path], out: str | Path, *, include_rejected: bool = False
) -> int:
    """Write the examples of every audit log in ``audits`` to the JSONL file ``out``.

    Returns the number of examples written (the file is replaced atomically).

    Raises
    ------
    DataError
        An audit log is missing or malformed, or no audit log was given.
    """
    paths = [Path(p) for p in audits]
    if not paths:
        raise DataError("export-dataset needs at least one audit log")
    examples: list[dict[str, Any]] = []
    for path in paths:
        examples.extend(examples_from_events(read_audit(path), include_rejected=include_rejected))
    target = Path(out)
    target.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(target, "".join(json.dumps(ex, ensure_ascii=False) + "\n" for ex in examples))
    return len(examples)


def _key(params: dict[str, Any]) -> tuple[tuple[str, float], ...]:
    return tuple(sorted((k, float(v)) for k, v in params.items()))


def _covers(proposed: dict[str, Any], full: tuple[tuple[str, float], ...]) -> bool:
    """A proposal (searched parameters) matches a decision's full parameter set."""
    values = dict(full)
    return all(k in values and float(v) == values[k] for k, v in proposed.items())
