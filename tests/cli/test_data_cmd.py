"""`celeris data ...` through typer's CliRunner and once through the installed console script."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

import celeris.data.exchange as exchange_mod
from celeris.cli.main import app
from celeris.data import Store, load, synthetic
from tests.data.fake_binance import FakeBinance, binance_client, serve

runner = CliRunner()


@pytest.fixture(autouse=True)
def celeris_home(tmp_path, monkeypatch):
    monkeypatch.setenv("CELERIS_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("COLUMNS", "200")
    return tmp_path / "home"


def test_data_help_shows_examples():
    result = runner.invoke(app, ["data", "--help"])
    assert result.exit_code == 0
    assert "celeris data load sample:sp500" in result.output
    for command in ("list", "load", "synthetic", "download"):
        assert command in result.output


def test_data_load_sample_prints_summary_and_head():
    result = runner.invoke(app, ["data", "load", "sample:sp500", "--head", "3"])
    assert result.exit_code == 0, result.output
    assert "5031" in result.output and "1999-01-04" in result.output
    assert "1D (median spacing" in result.output
    assert "1,229.23" in result.output


def test_data_load_json_is_machine_readable():
    result = runner.invoke(app, ["data", "load", "sample:nasdaq", "--json", "--head", "2"])
    assert result.exit_code == 0, result.output
    info = json.loads(result.stdout)
    assert info["rows"] == 5031
    assert info["first"] == "1999-01-04T00:00:00+00:00"
    assert len(info["head"]) == 2 and info["head"][0]["open"] == pytest.approx(2207.540039)


def test_data_load_unknown_sample_one_line_exit_2():
    result = runner.invoke(app, ["data", "load", "sample:sp5000"])
    assert result.exit_code == 2
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and "did you mean 'sp500'" in lines[0]


def test_data_load_missing_file_exit_2(tmp_path):
    result = runner.invoke(app, ["data", "load", str(tmp_path / "nope.csv")])
    assert result.exit_code == 2
    assert "no such file" in result.output


@pytest.mark.parametrize("name", ["bars.parquet", "bars.csv", "bars.csv.gz"])
def test_data_synthetic_writes_file_that_loads_back(tmp_path, name):
    out = tmp_path / name
    result = runner.invoke(
        app, ["data", "synthetic", "--bars", "500", "--seed", "4", "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    assert "wrote 500 bars" in result.output
    pd.testing.assert_frame_equal(load(out), synthetic(500, seed=4), rtol=1e-12)


def test_data_synthetic_out_sweeps_dead_writers_temp_file_keeps_users(tmp_path):
    import os
    import subprocess
    import sys
    import time

    from celeris.data import atomic

    out = tmp_path / "bars.csv"
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait(timeout=30)
    leftover = tmp_path / f".bars.csv.tmp-{dead.pid}-{atomic._host_tag()}-0123456789ab"
    user = tmp_path / ".bars.csv.tmp-notes"
    old = time.time() - 2 * 86400
    for path in (leftover, user):
        path.write_bytes(b"x")
        os.utime(path, (old, old))
    result = runner.invoke(app, ["data", "synthetic", "--bars", "10", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert not leftover.exists() and user.exists()


def test_data_synthetic_bad_suffix_exit_2(tmp_path):
    result = runner.invoke(
        app, ["data", "synthetic", "--bars", "10", "--out", str(tmp_path / "x.xlsx")]
    )
    assert result.exit_code == 2
    assert ".parquet" in result.output


def test_data_list_empty_then_stored():
    result = runner.invoke(app, ["data", "list"])
    assert result.exit_code == 0 and "nothing stored" in result.output
    Store().save(synthetic(100, seed=0), "binance", "BTC/USDT", "1m")
    result = runner.invoke(app, ["data", "list"])
    assert result.exit_code == 0, result.output
    assert "BTC/USDT" in result.output and "100" in result.output
    listing = json.loads(runner.invoke(app, ["data", "list", "--json"]).stdout)
    assert listing[0]["rows"] == 100 and listing[0]["missing"] == 0


class _FakeExchange:
    """The ccxt surface download() uses, serving 1h bars with one gap."""

    id = "binance"
    rateLimit = 50
    enableRateLimit = False

    def __init__(self) -> None:
        self.timeframes = {"1h": "1h", "1d": "1d"}
        bars = synthetic(48, freq="1h", start="2024-01-01", seed=1).drop(
            pd.Timestamp("2024-01-01 05:00", tz="UTC")
        )
        self.rows = [[int(t.value // 1_000_000), *map(float, row)] for t, row in bars.iterrows()]

    def parse_timeframe(self, timeframe: str) -> int:
        return {"1h": 3600, "1d": 86400}[timeframe]

    def milliseconds(self) -> int:
        return int(pd.Timestamp("2030-01-01", tz="UTC").value // 1_000_000)

    def load_markets(self) -> dict[str, dict]:
        return {"BTC/USDT": {}}

    def fetch_ohlcv(self, symbol, timeframe, since=None, limit=None):
        return [r for r in self.rows if r[0] >= since][:limit]


def test_data_download_stores_and_lists_gaps(monkeypatch):
    monkeypatch.setattr(exchange_mod, "make_exchange", lambda name: _FakeExchange())
    args = [
        "data",
        "download",
        "binance",
        "BTC/USDT",
        "--timeframe",
        "1h",
        "--since",
        "2024-01-01",
        "--until",
        "2024-01-03",
        "--limit",
        "10",
        "--no-progress",
    ]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "fetched 47 new bars" in result.output
    assert "1 gap(s)" in result.output and "2024-01-01 05:00" in result.output
    assert len(Store().read("binance", "BTC/USDT", "1h")) == 47
    info = json.loads(runner.invoke(app, [*args, "--json"]).stdout)
    assert info["fetched"] == 0 and info["rows"] == 47 and info["gaps"][0]["missing"] == 1


def test_data_download_bad_range_exit_2(monkeypatch):
    monkeypatch.setattr(exchange_mod, "make_exchange", lambda name: _FakeExchange())
    result = runner.invoke(
        app,
        [
            "data",
            "download",
            "binance",
            "BTC/USDT",
            "--since",
            "2024-02-01",
            "--until",
            "2024-01-01",
        ],
    )
    assert result.exit_code == 2 and "must be before until" in result.output


def test_data_download_unknown_exchange_exit_2():
    result = runner.invoke(
        app, ["data", "download", "binanse", "BTC/USDT", "--since", "2024-01-01"]
    )
    assert result.exit_code == 2 and "did you mean 'binance'" in result.output


@pytest.fixture
def fake_binance(monkeypatch):
    """A local Binance (spot and USDⓈ-M) that `celeris data download` reaches through ccxt."""
    fake = FakeBinance(missing_funding=(40, 41))
    with serve(fake) as url:
        monkeypatch.setattr(
            exchange_mod, "make_exchange", lambda name: binance_client(url, ("spot", "linear"))
        )
        yield fake


FUNDING_ARGS = [
    "data",
    "download",
    "binance",
    "BTC/USDT:USDT",
    "--funding",
    "--since",
    "2024-01-01",
    "--until",
    "2024-01-31",
    "--limit",
    "40",
    "--no-progress",
]


def test_data_download_funding_stores_summarises_and_resumes(fake_binance):
    result = runner.invoke(app, FUNDING_ARGS)
    assert result.exit_code == 0, result.output
    assert "binance BTC/USDT:USDT funding" in result.output
    assert "fetched 88 new funding rates" in result.output
    assert "interval" in result.output and "8h" in result.output
    assert "1 gap(s)" in result.output and "2024-01-14 08:00" in result.output
    stored = Store().read_funding("binance", "BTC/USDT:USDT")
    assert len(stored) == 88 and stored["rate"].iloc[0] == pytest.approx(1e-4)
    fake_binance.funding_requests.clear()
    info = json.loads(runner.invoke(app, [*FUNDING_ARGS, "--json"]).stdout)
    assert info["fetched"] == 0 and info["rows"] == 88 and info["interval"] == "8h"
    assert info["gaps"] == [
        {"start": "2024-01-14T08:00:00+00:00", "end": "2024-01-14T16:00:00+00:00", "missing": 2}
    ]
    assert info["rate_max"] == pytest.approx(1e-4 + 89 * 1e-6)
    assert info["rate_mean_annualised"] == pytest.approx(info["rate_mean"] * 3 * 365)
    # only after the last stored funding time
    assert [int(r["startTime"]) for r in fake_binance.funding_requests] == [
        int(pd.Timestamp("2024-01-30 16:00:00.001", tz="UTC").value // 1_000_000)
    ]
    listing = json.loads(runner.invoke(app, ["data", "list", "--json"]).stdout)
    assert [(r["symbol"], r["timeframe"], r["rows"]) for r in listing] == [
        ("BTC/USDT:USDT", "funding", 88)
    ]


def test_data_download_funding_spot_symbol_one_line_exit_2(fake_binance):
    args = ["data", "download", "binance", "BTC/USDT", "--funding", "--since", "2024-01-01"]
    result = runner.invoke(app, args)
    assert result.exit_code == 2
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and "is a spot market" in lines[0] and "'BTC/USDT:USDT'" in lines[0]
    assert fake_binance.funding_requests == []


def test_data_download_funding_with_timeframe_exit_2():
    args = ["data", "download", "binance", "BTC/USDT:USDT", "--funding", "-t", "1h"]
    result = runner.invoke(app, [*args, "--since", "2024-01-01"])
    assert result.exit_code == 2 and "--timeframe 1h does not apply to --funding" in result.output


def test_data_download_help_teaches_funding():
    result = runner.invoke(app, ["data", "download", "--help"])
    assert result.exit_code == 0
    assert "celeris data download binance BTC/USDT:USDT --funding --since 2024-01-01" in (
        result.output
    )


def test_data_console_script_loads_sample(tmp_path):
    script = Path(sys.executable).with_name("celeris")
    assert script.exists(), f"console script not installed next to {sys.executable}"
    env = {**os.environ, "CELERIS_HOME": str(tmp_path), "COLUMNS": "200"}
    done = subprocess.run(
        [str(script), "data", "load", "sample:sp500", "--json", "--head", "1"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["rows"] == 5031
    bad = subprocess.run(
        [str(script), "data", "load", "sample:nope"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "unknown sample" in bad.stderr


def test_data_synthetic_killed_mid_write_old_file_intact(tmp_path):
    out = tmp_path / "bars.csv"
    result = runner.invoke(
        app, ["data", "synthetic", "--bars", "50", "--seed", "1", "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    before = out.read_bytes()
    env = {**os.environ, "CELERIS_HOME": str(tmp_path / "home")}
    code = "import sys; from celeris.cli.main import app; sys.argv[0] = 'celeris'; app()"
    # 600k bars: pandas formats the index (~40% of the write) before the first byte, then writes
    # for ~6 s of CPU, ample time to kill it mid-write (3M bars cost ~35 s of CPU for the same).
    proc = subprocess.Popen(
        [sys.executable, "-c", code, "data", "synthetic", "--bars", "600000", "--out", str(out)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        # kill it once the new file is being written (some bytes of it are on disk)
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and proc.poll() is None:
            temps = list(tmp_path.glob(".bars.csv.tmp-*"))
            if temps and temps[0].stat().st_size > 0:
                break
            time.sleep(0.005)
        assert proc.poll() is None, "the writer finished before it could be killed"
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)
    assert out.read_bytes() == before
    pd.testing.assert_frame_equal(load(out), synthetic(50, seed=1), rtol=1e-12)
    assert list(tmp_path.glob(".bars.csv.tmp-*"))  # the killed writer's leftover ...
    result = runner.invoke(
        app, ["data", "synthetic", "--bars", "60", "--seed", "2", "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    assert not list(tmp_path.glob(".bars.csv.tmp-*"))  # ... is swept by the next write
    assert len(load(out)) == 60


def test_data_synthetic_missing_directory_one_line_exit_2(tmp_path):
    out = tmp_path / "no" / "such" / "dir" / "bars.parquet"
    result = runner.invoke(app, ["data", "synthetic", "--bars", "10", "--out", str(out)])
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and "does not exist" in lines[0] and "dir" in lines[0]
    assert result.exception is None or isinstance(result.exception, SystemExit)


@pytest.mark.parametrize("content", [b"", b"\n\n  \n"])
def test_data_load_empty_csv_one_line_exit_2(tmp_path, content):
    path = tmp_path / "empty.csv"
    path.write_bytes(content)
    result = runner.invoke(app, ["data", "load", str(path)])
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and "empty.csv" in lines[0]
