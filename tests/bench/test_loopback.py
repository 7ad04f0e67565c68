"""Only loopback URLs are accepted."""

from __future__ import annotations

import pytest

import celeris.bench as bench
from celeris.bench import Target
from celeris.errors import ConfigError


@pytest.mark.parametrize(
    "url",
    ["http://127.0.0.1:8000/x", "http://127.3.4.5:9/", "http://[::1]:8000/", "http://localhost:80"],
)
def test_check_loopback_loopback_forms_accepted(url: str) -> None:
    _, port, path = bench.check_loopback(url)
    assert port in (8000, 9, 80) and path.startswith("/")


@pytest.mark.parametrize(
    "url, words",
    [
        ("http://10.0.0.1:8000/", "refusing to send load to 10.0.0.1"),
        ("http://192.168.1.20/", "loopback"),
        ("http://0.0.0.0:8000/", "loopback"),
        ("http://example.com/", "refusing to send load to example.com"),
        ("http://[2001:db8::1]:80/", "loopback"),
        ("https://127.0.0.1:8443/", "only http://"),
        ("ftp://127.0.0.1/", "only http://"),
        ("127.0.0.1:8000", "only http://"),
    ],
)
def test_check_loopback_non_loopback_refused(url: str, words: str) -> None:
    with pytest.raises(ConfigError, match=words.replace(".", r"\.").replace("/", r"/")):
        bench.check_loopback(url)
    with pytest.raises(ConfigError):
        bench.load(Target(url), max_requests=1)
