"""Prometheus metrics and the admin endpoints of ``celeris live``.

:class:`LiveMetrics` owns a registry of its own (a live process and a server in one test process
do not collide) and is updated by the loop after every step. :func:`admin_app` serves it with the
health checks and the kill switch:

* ``GET /metrics``: the registry in Prometheus' text format;
* ``GET /healthz``: 200 while the process runs; ``GET /readyz``: 200 once the journal is resumed
  and the first bars arrived, 503 with the reason before (and while the kill switch is engaged
  or data is stale, so that an orchestrator can see it);
* ``POST /admin/kill`` and ``POST /admin/resume``: the kill switch, with
  ``Authorization: Bearer $CELERIS_ADMIN_TOKEN`` (without a configured token they answer 403).

Metric names (all prefixed ``celeris_live_``): ``bars_total``, ``bar_lag_seconds`` (now minus the
close time of the last processed bar), ``signal_latency_seconds`` (histogram: bars received to
signals published), ``signals_total``, ``fills_total``, ``position{symbol}``, ``equity``,
``pnl``, ``kill_switch``, ``risk_blocked_total{reason}``, ``stale_symbols``, ``filled_bars_total``,
for a model ``feature_psi{feature}``, ``realised_error``, ``error_ratio`` and ``error_drift``
(warnings logged once when PSI > 0.25 or the error drifts), and the market stream's counters as ``stream_<name>_total`` (reconnects, back-filled bars,
duplicates, late and out-of-order messages, REST polls...), and a perpetual run's funding
counters as ``funding_<name>_total`` (requests, failures, waits for a rate not listed yet...).
"""

from __future__ import annotations

import hmac
import logging
import os
import time
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

__all__ = ["LATENCY_BUCKETS", "PSI_WARN", "LiveMetrics", "admin_app"]

logger = logging.getLogger("celeris.live")
#: PSI above which an input feature is reported as drifted (the usual "significant shift").
PSI_WARN = 0.25

#: Bucket bounds of the bar-to-signal latency histogram, in seconds (50 us to 1 s).
LATENCY_BUCKETS = (5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 1e-2, 2.5e-2, 0.1, 0.25, 1.0)


class _Live(Collector):
    """Values read from the loop and the stream when scraped."""

    def __init__(self, metrics: LiveMetrics) -> None:
        self.m = metrics

    def collect(self) -> Iterator[Any]:
        loop = self.m.loop
        if loop is None:
            return
        blocked = CounterMetricFamily(
            "celeris_live_risk_blocked",
            "Entry signals dropped by a risk control",
            labels=["reason"],
        )
        for reason, n in sorted(loop.risk.blocked.items()):
            blocked.add_metric([reason], float(n))
        yield blocked
        yield GaugeMetricFamily(
            "celeris_live_kill_switch",
            "1 while the kill switch is engaged (no entries, positions flattened)",
            value=1.0 if loop.risk.killed is not None else 0.0,
        )
        yield CounterMetricFamily(
            "celeris_live_filled_bars",
            "Flat bars carried for a symbol that skipped a time the others have",
            value=float(loop.filled_bars),
        )
        yield from self._drift(loop)
        stream = self.m.stream
        if stream is not None:
            stale = stream.stale()
            yield GaugeMetricFamily(
                "celeris_live_stale_symbols",
                "Symbols without a closed bar for the stale interval (no entries there)",
                value=float(len(stale)),
            )
            for name, value in sorted(stream.stats().items()):
                if name == "stale_symbols":  # a gauge, exported above from stale()
                    continue
                yield CounterMetricFamily(
                    f"celeris_live_stream_{name}", f"Market stream: {name.replace('_', ' ')}",
                    value=float(value),
                )  # fmt: skip
        stats = getattr(self.m.funding, "stats", None)  # the exchange's funding rates
        for name, value in sorted((stats() if stats is not None else {}).items()):
            yield CounterMetricFamily(
                f"celeris_live_funding_{name}", f"Funding rates: {name.replace('_', ' ')}",
                value=float(value),
            )  # fmt: skip

    def _drift(self, loop: Any) -> Iterator[Any]:
        """A model source's drift: PSI per input feature, realised against validation error."""
        drift_of = getattr(loop.source, "drift", None)
        if drift_of is None:
            return
        drift = drift_of()
        psi = GaugeMetricFamily(
            "celeris_live_feature_psi",
            "Population-stability index of an input feature, recent bars against training",
            labels=["feature"],
        )
        for feature, value in sorted(drift["psi"].items()):
            psi.add_metric([feature], float(value))
            if value > PSI_WARN and feature not in self.m.warned:
                self.m.warned.add(feature)
                logger.warning(
                    "input feature %s drifted: PSI %.3f > %.2f", feature, value, PSI_WARN
                )
        yield psi
        error = drift["error"]
        if error is not None:
            yield GaugeMetricFamily(
                "celeris_live_realised_error", "Rolling mean realised MAE", value=error.realised
            )
            yield GaugeMetricFamily(
                "celeris_live_error_ratio",
                "Realised over validation error (NaN: unknown)",
                value=error.ratio,
            )
            yield GaugeMetricFamily(
                "celeris_live_error_drift",
                "1 when the realised error exceeds the validation error by the set factor",
                value=1.0 if error.exceeded else 0.0,
            )
            if error.exceeded and "error" not in self.m.warned:
                self.m.warned.add("error")
                logger.warning("realised error %.4g is %.2fx the validation error",
                               error.realised, error.ratio)  # fmt: skip


class LiveMetrics:
    """The live loop's metrics (see the module docstring)."""

    def __init__(self, symbols: list[str] | tuple[str, ...], *, timeframe_ns: int) -> None:
        self.registry = CollectorRegistry()
        self.timeframe_ns = int(timeframe_ns)
        self.loop: Any = None
        self.stream: Any = None
        self.funding: Any = None  # a perpetual run's funding source (its counters)
        self.ready_reason: str | None = "starting"
        self.warned: set[str] = set()  # drift warnings logged once each
        r = self.registry
        self.bars = Counter("celeris_live_bars", "Closed bars processed", registry=r)
        self.signals = Counter(
            "celeris_live_signals", "Signals journaled and published", registry=r
        )
        self.fills = Counter("celeris_live_fills", "Paper account fills", registry=r)
        self.latency = Histogram(
            "celeris_live_signal_latency_seconds",
            "Bars received to the step's signals published (features, signal, risk, account, "
            "journal, feed)",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.lag = Gauge(
            "celeris_live_bar_lag_seconds",
            "Now minus the close time of the last processed bar",
            registry=r,
        )
        self.position = Gauge(
            "celeris_live_position", "Paper position (units)", ["symbol"], registry=r
        )
        self.equity = Gauge("celeris_live_equity", "Paper account value", registry=r)
        self.pnl = Gauge(
            "celeris_live_pnl", "Paper account value minus its starting cash", registry=r
        )
        self._last_close_ns = 0
        self.lag.set_function(self._lag)
        r.register(_Live(self))
        for s in symbols:
            self.position.labels(symbol=s).set(0.0)

    def _lag(self) -> float:
        if not self._last_close_ns:
            return float("nan")
        return (time.time_ns() - self._last_close_ns) / 1e9

    def observe_step(self, loop: Any, report: Any, times: np.ndarray) -> None:
        self.loop = loop
        self.bars.inc(report.bars)
        self.signals.inc(len(report.signals))
        self.fills.inc(len(report.records))
        if report.received_ns and report.published_ns:
            self.latency.observe((report.published_ns - report.received_ns) / 1e9)
        self._last_close_ns = int(times[-1]) + self.timeframe_ns
        for s, v in zip(loop.symbols, loop.account.position_array(), strict=True):
            self.position.labels(symbol=s).set(float(v))
        if np.isfinite(report.value):
            self.equity.set(report.value)
            init = float(np.sum(loop.account.layout.inputs.group_params[:, 0]))
            self.pnl.set(report.value - init)

    def text(self) -> bytes:
        return generate_latest(self.registry)


def admin_app(
    metrics: LiveMetrics, on_kill: Callable[[str], None], on_resume: Callable[[], None]
) -> Any:
    """The aiohttp application of ``/metrics``, ``/healthz``, ``/readyz`` and ``/admin/*``."""
    from aiohttp import web

    token = os.environ.get("CELERIS_ADMIN_TOKEN") or None

    def authorised(request: web.Request) -> web.Response | None:
        if token is None:
            return web.json_response(
                {"error": "set CELERIS_ADMIN_TOKEN to use the admin endpoints"}, status=403
            )
        given = request.headers.get("Authorization", "")
        if not hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
            return web.json_response({"error": "wrong or missing bearer token"}, status=401)
        return None

    async def scrape(request: web.Request) -> web.Response:
        return web.Response(body=metrics.text(), content_type="text/plain", charset="utf-8")

    async def healthz(request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def readyz(request: web.Request) -> web.Response:
        reason = metrics.ready_reason
        loop = metrics.loop
        if reason is None and loop is not None and loop.risk.killed is not None:
            reason = f"kill switch engaged: {loop.risk.killed}"
        if reason is None and metrics.stream is not None and metrics.stream.stale():
            reason = f"stale data: {', '.join(metrics.stream.stale())}"
        if reason is not None:
            return web.json_response({"status": "not ready", "reason": reason}, status=503)
        return web.json_response({"status": "ready"})

    async def kill(request: web.Request) -> web.Response:
        denied = authorised(request)
        if denied is not None:
            return denied
        body = await request.json() if request.can_read_body else {}
        reason = str((body or {}).get("reason", "admin endpoint"))
        on_kill(reason)
        return web.json_response({"kill_switch": True, "reason": reason})

    async def resume(request: web.Request) -> web.Response:
        denied = authorised(request)
        if denied is not None:
            return denied
        on_resume()
        return web.json_response({"kill_switch": False})

    app = web.Application()
    app.router.add_get("/metrics", scrape)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_post("/admin/kill", kill)
    app.router.add_post("/admin/resume", resume)
    return app
