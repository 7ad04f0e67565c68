"""The server's response cache over a run, from its Prometheus ``celeris_cache_events_total``.

Given ``metrics_url``, the counters are read right before and right after the measured requests
and the run reports the share of looked-up rows answered from a cache; other traffic to the
server in that time counts too.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from celeris.bench.client import Client, error_kind
from celeris.bench.config import LoadgenError
from celeris.bench.loopback import check_loopback


@dataclasses.dataclass(frozen=True)
class CacheStats:
    """The server's response cache over the measured requests (its ``/metrics`` counters).

    Attributes
    ----------
    lookups
        Histories (rows) looked up in the first cache tier; ``None`` when the counters could
        not be read.
    hits
        Histories answered from any tier (memory, or Redis after a memory miss).
    note
        Why there is no ratio (counters unavailable, or no look-ups: the cache is off).
    """

    lookups: int | None
    hits: int | None
    note: str = ""

    @property
    def hit_ratio(self) -> float | None:
        """``hits / lookups``; ``None`` without look-ups or counters."""
        if not self.lookups or self.hits is None:
            return None
        return self.hits / self.lookups

    def text(self) -> str:
        """The ratio for a table: ``"0.0%"``, ``"off"`` (no look-ups) or ``"n/a"``."""
        ratio = self.hit_ratio
        if ratio is not None:
            return f"{ratio:.1%}"
        return "off" if self.lookups == 0 else "n/a"

    def to_dict(self) -> dict[str, Any]:
        """Return the counts, the ratio and the note as a dict."""
        return {
            "lookups": self.lookups,
            "hits": self.hits,
            "hit_ratio": self.hit_ratio,
            "note": self.note,
        }


_CACHE_SAMPLE = "celeris_cache_events_total{"
_CACHE_FAMILY = "# TYPE celeris_cache_events_total counter"


def parse_cache_counters(text: str) -> dict[tuple[str, str], float] | None:
    """Return ``{(tier, result): count}`` of ``celeris_cache_events_total`` in a Prometheus
    text exposition; ``None`` when the family is absent (not a Celeris server)."""
    if _CACHE_FAMILY not in text and _CACHE_SAMPLE not in text:
        return None
    out: dict[tuple[str, str], float] = {}
    for line in text.splitlines():
        if not line.startswith(_CACHE_SAMPLE):
            continue
        labels_text, _, value = line[len(_CACHE_SAMPLE) :].partition("}")
        labels = dict(
            (k.strip(), v.strip().strip('"'))
            for k, _, v in (p.partition("=") for p in labels_text.split(",") if p)
        )
        try:
            count = float(value.split()[0])
        except (IndexError, ValueError):
            raise LoadgenError(f"unreadable cache counter line {line[:120]!r}") from None
        key = (labels.get("tier", ""), labels.get("result", ""))
        out[key] = out.get(key, 0.0) + count
    return out


async def read_cache_counters(url: str, timeout_s: float) -> dict[tuple[str, str], float] | str:
    """GET the server's ``/metrics`` and return its cache counters, or why not."""
    host, port, path = check_loopback(url)
    shown = f"[{host}]" if ":" in host else host
    raw = (
        f"GET {path} HTTP/1.1\r\nHost: {shown}:{port}\r\nUser-Agent: celeris-bench\r\n\r\n"
    ).encode("latin-1")
    client = Client(host, port, timeout_s)
    try:
        status, body = await client.send(raw)
    except Exception as exc:
        return f"cannot read {url} ({error_kind(exc)})"
    finally:
        client.close()
    if status != 200:
        return f"no metrics at {url} (HTTP {status})"
    counters = parse_cache_counters(body.decode("utf-8", "replace"))
    if counters is None:
        return f"{url} exports no celeris_cache_events_total"
    return counters


def cache_delta(
    before: dict[tuple[str, str], float] | str, after: dict[tuple[str, str], float] | str
) -> CacheStats:
    if isinstance(before, str) or isinstance(after, str):
        return CacheStats(None, None, before if isinstance(before, str) else str(after))

    def d(tier: str, result: str) -> int:
        return int(after.get((tier, result), 0.0) - before.get((tier, result), 0.0))

    lookups = d("memory", "hit") + d("memory", "miss")
    hits = d("memory", "hit") + d("redis", "hit")
    note = "" if lookups else "no cache look-ups: the server's cache is off"
    return CacheStats(lookups, hits, note)
