"""The signal feed's latency benchmark (celeris.bench.feed_latency) against a real consumer."""

from __future__ import annotations

import pytest

from celeris.bench.feed_latency import roundtrip_latency
from celeris.errors import ConfigError


def test_roundtrip_latency_reports_ordered_positive_percentiles() -> None:
    report = roundtrip_latency(300, warmup=50)
    assert report.n == 300
    assert 0 < report.one_way_p50_us <= report.one_way_p99_us <= report.one_way_max_us
    assert 0 < report.round_trip_p50_us <= report.round_trip_p99_us <= report.round_trip_max_us
    # The round trip is the one-way trip plus the acknowledgement back, record by record.
    assert report.one_way_p50_us < report.round_trip_p50_us


def test_roundtrip_latency_bad_arguments_raise() -> None:
    with pytest.raises(ConfigError, match="n must be >= 1"):
        roundtrip_latency(0)
