"""The signal feed's latency benchmark (celeris.bench.feed_latency) against a real consumer."""

from __future__ import annotations

import pytest

from celeris.bench.feed_latency import roundtrip_latency
from celeris.errors import CelerisTypeError, ConfigError


def test_roundtrip_latency_reports_ordered_positive_percentiles() -> None:
    report = roundtrip_latency(300, warmup=50)
    assert report.n == 300
    assert 0 < report.one_way_p50_us <= report.one_way_p99_us <= report.one_way_max_us
    assert 0 < report.round_trip_p50_us <= report.round_trip_p99_us <= report.round_trip_max_us
    # The round trip is the one-way trip plus the acknowledgement back, record by record.
    assert report.one_way_p50_us < report.round_trip_p50_us


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"n": 0}, ConfigError, r"^n must be >= 1, got 0$"),
        ({"n": 10, "warmup": -1}, ConfigError, r"^warmup must be >= 0, got -1$"),
        ({"n": 2.5}, CelerisTypeError, r"^n must be an int >= 1, got float 2\.5$"),
        ({"n": True}, CelerisTypeError, r"^n must be an int >= 1, got bool True$"),
        ({"n": 10, "warmup": 1.0}, CelerisTypeError, r"^warmup must be an int >= 0, got float"),
    ],
)
def test_roundtrip_latency_bad_arguments_raise_one_type_per_mistake(
    kwargs: dict, error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message):
        roundtrip_latency(**kwargs)
