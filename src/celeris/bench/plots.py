"""A latency histogram and CDF per run, as a PNG."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from celeris.bench.results import RunResult
from celeris.data.atomic import atomic_path
from celeris.errors import ConfigError


def plot_latency(results: Sequence[RunResult], path: str | Path, *, title: str = "") -> Path:
    """Write a PNG with a latency histogram and a latency CDF per run; return its path."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    results = [r for r in results if r.latencies_s.size]
    if not results:
        raise ConfigError("no successful requests to plot")
    path = Path(path)
    if path.suffix.lower() != ".png":
        raise ConfigError(f"the plot is a PNG: give a path ending in .png, got {str(path)!r}")
    fig = Figure(figsize=(11, 4.2), layout="constrained")
    FigureCanvasAgg(fig)
    hist, cdf = fig.subplots(1, 2)
    all_ms = np.concatenate([r.latencies_s for r in results]) * 1e3
    low = max(float(all_ms.min()), 1e-3)
    high = max(float(all_ms.max()), low * 1.01)
    bins = np.geomspace(low, high, 60)
    for r in results:
        ms = np.sort(r.latencies_s * 1e3)
        name = f"{r.label} (c={r.concurrency})"
        hist.hist(ms, bins=bins, histtype="step", linewidth=1.4, label=name)
        q = np.arange(1, ms.size + 1) / ms.size
        (line,) = cdf.plot(ms, q * 100, linewidth=1.4, label=name)
        p99 = float(np.percentile(ms, 99))
        cdf.axvline(p99, color=line.get_color(), linestyle=":", linewidth=1)
    hist.set_xscale("log")
    hist.set_xlabel("latency (ms, log scale)")
    hist.set_ylabel("requests")
    hist.set_title("latency histogram")
    cdf.set_xscale("log")
    cdf.set_xlabel("latency (ms, log scale)")
    cdf.set_ylabel("% of requests at or below")
    cdf.set_title("latency CDF (dotted: p99)")
    cdf.set_ylim(0, 100.5)
    for ax in (hist, cdf):
        ax.grid(True, which="both", alpha=0.3)
    cdf.legend(fontsize=8, loc="lower right")
    if title:
        fig.suptitle(title)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:  # the temporary name hides the suffix: name the format
        fig.savefig(tmp, dpi=110, format=path.suffix.lstrip(".").lower() or "png")
    return path
