"""The server's cache counters read from /metrics."""

from __future__ import annotations

import celeris.bench as bench
from celeris.bench import Target
from celeris.bench.cache_stats import cache_delta
from tests.bench.conftest import LoopbackServer


def test_parse_cache_counters_sums_tiers_and_results() -> None:
    text = (
        "# HELP celeris_cache_events_total Cache look-ups\n"
        "# TYPE celeris_cache_events_total counter\n"
        'celeris_cache_events_total{result="hit",tier="memory"} 7.0\n'
        'celeris_cache_events_total{result="miss",tier="memory"} 3.0\n'
        'celeris_cache_events_total{result="hit",tier="redis"} 2.0\n'
        'celeris_cache_events_created{result="hit",tier="memory"} 1.7e9\n'
    )
    assert bench.parse_cache_counters(text) == {
        ("memory", "hit"): 7.0, ("memory", "miss"): 3.0, ("redis", "hit"): 2.0,
    }  # fmt: skip
    assert bench.parse_cache_counters("# TYPE celeris_cache_events_total counter\n") == {}
    assert bench.parse_cache_counters("up 1\n") is None
    before = {("memory", "hit"): 7.0, ("memory", "miss"): 3.0}
    after = {("memory", "hit"): 10.0, ("memory", "miss"): 8.0, ("redis", "hit"): 1.0}
    stats = cache_delta(before, after)
    assert (stats.lookups, stats.hits, stats.hit_ratio, stats.text()) == (8, 4, 0.5, "50.0%")
    off = cache_delta(before, before)
    assert (off.hit_ratio, off.text()) == (None, "off") and "cache is off" in off.note


def test_load_metrics_url_without_celeris_metrics_reported_unavailable(srv: LoopbackServer) -> None:
    target = Target(f"{srv.url}/ok", metrics_url=f"{srv.url}/nothing-here")
    r = bench.load(target, concurrency=2, max_requests=10)
    assert r.cache is not None and r.cache.text() == "n/a" and "HTTP 404" in r.cache.note
    assert r.to_dict()["cache"]["hit_ratio"] is None
    assert bench.load(Target(f"{srv.url}/ok"), max_requests=2).cache is None
