"""The LLM analyst and verified strategy optimisation.

- :class:`LLMClient` asks any OpenAI-compatible server (vLLM, llama.cpp, Ollama) for answers
  validated by pydantic schemas (:mod:`celeris.llm.schemas`), re-asking on invalid output.
- :func:`optimize` searches strategy parameters with Optuna or the LLM and accepts a candidate
  only when it beats the incumbent out of sample and its deflated Sharpe ratio holds up;
  :func:`replay` re-runs a recorded run from its audit log.
- :func:`analyze` asks for a strategy analysis, a market-regime reading and a risk assessment.
- :func:`export_dataset` turns audited runs into instruction-tuning data.

Names load lazily: ``import celeris.llm`` needs neither torch nor an LLM server.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "LLMClient": "celeris.llm.client",
    "Answer": "celeris.llm.client",
    "InvalidAnswer": "celeris.llm.client",
    "LLMSettings": "celeris.llm.settings",
    "load_llm_settings": "celeris.llm.settings",
    "optimize": "celeris.llm.optimizer",
    "replay": "celeris.llm.optimizer",
    "OptimizeResult": "celeris.llm.optimizer",
    "Guard": "celeris.llm.verify",
    "OBJECTIVES": "celeris.llm.verify",
    "AuditLog": "celeris.llm.audit",
    "read_audit": "celeris.llm.audit",
    "load_prompt": "celeris.llm.prompts",
    "available_prompts": "celeris.llm.prompts",
    "ContextBuilder": "celeris.llm.context",
    "token_counter": "celeris.llm.context",
    "MarketRegime": "celeris.llm.schemas",
    "RiskAssessment": "celeris.llm.schemas",
    "proposal_schema": "celeris.llm.schemas",
    "search_space": "celeris.llm.schemas",
    "export_dataset": "celeris.llm.dataset",
    "analyze": "celeris.llm.analyst",
    "AnalysisReport": "celeris.llm.analyst",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'celeris.llm' has no attribute {name!r}")
