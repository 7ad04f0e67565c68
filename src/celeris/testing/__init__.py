"""Test doubles: an OpenAI-compatible server, a tiny local chat model and a fake exchange.

Not runtime: the LLM analyst (:mod:`celeris.llm`) talks to any OpenAI-compatible server through
the ``openai`` SDK and imports nothing from here. These modules let its tests, the docs and
offline demos (``celeris llm serve --tiny``) run against a real socket without a network or a
GPU:

- :mod:`celeris.testing.llm_server`: :class:`~celeris.testing.llm_server.OpenAICompatibleServer`,
  enough of the OpenAI chat-completions HTTP API (standard library HTTP) over any chat model.
- :mod:`celeris.testing.tiny_llm`: :func:`~celeris.testing.tiny_llm.build_tiny_model` (a tiny
  random Llama that loads offline) and
  :class:`~celeris.testing.tiny_llm.LocalChatModel` (any local causal LM as a chat model, with
  JSON-schema-constrained decoding).
- :mod:`celeris.testing.fake_exchange`: :class:`~celeris.testing.fake_exchange.FakeExchange`, a
  local Binance (REST and the kline websocket, a clock the caller drives, faults on demand) that
  ``celeris live`` and ccxt run against offline (``celeris exchange fake``, docs/exchange.md).
"""
