"""celeris.data.funding: reading funding-rate CSV files (moved here from tests/llm/test_market.py)."""

from __future__ import annotations

import numpy as np
import pytest

from celeris.data import load_funding
from celeris.errors import DataError


def write(tmp_path, name: str, text: str):
    path = tmp_path / name
    path.write_text(text)
    return path


FUNDING = """timestamp,rate
2024-01-01T00:00:00Z,0.0001
2024-01-01T08:00:00Z,0.00008
2024-01-01T16:00:00Z,-0.00002
2024-01-02T00:00:00Z,0.00004
"""


def test_load_funding_reads_iso_and_epoch_timestamps(tmp_path):
    iso = load_funding(write(tmp_path, "f.csv", FUNDING))
    epoch_text = "timestamp,rate\n" + "".join(
        f"{int(ts.timestamp() * 1000)},{rate!r}\n" for ts, rate in iso.items()
    )
    epoch = load_funding(write(tmp_path, "e.csv", epoch_text))
    assert str(iso.index.tz) == "UTC"
    assert iso.index.equals(epoch.index)
    np.testing.assert_array_equal(iso.to_numpy(), [1e-4, 8e-5, -2e-5, 4e-5])
    np.testing.assert_array_equal(epoch.to_numpy(), iso.to_numpy())


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (
            "2024-01-01T00:00:00Z,0.0001\n2024-01-01T08:00:00Z,nan\n",
            r"line 3: rate 'nan' is not a finite",
        ),
        (
            "2024-01-01T00:00:00Z,0.0001\n2024-01-01T08:00:00Z,\n",
            r"line 3: rate '' is not a finite",
        ),
        ("2024-01-01T00:00:00Z,0.0001\n2024-01-01T00:00:00Z,0.0002\n", r"line 3: .* duplicates"),
        (
            "2024-01-01T08:00:00Z,0.0001\n2024-01-01T00:00:00Z,0.0002\n",
            r"line 3: .* is earlier than",
        ),
        ("2024-01-01T00:00:00Z,0.0001\n01/02/2024,0.0002\n", r"line 3: timestamp '01/02/2024'"),
        ("2024-01-01T00:00:00Z,1.5\n", r"line 2: rate 1.5 is 100% or more"),
    ],
)
def test_load_funding_bad_rows_raise_naming_file_and_line(tmp_path, body, message):
    path = write(tmp_path, "bad.csv", "timestamp,rate\n" + body)
    with pytest.raises(DataError, match=message) as info:
        load_funding(path)
    assert str(path) in str(info.value)


def test_load_funding_wrong_columns_raise(tmp_path):
    with pytest.raises(DataError, match="exactly the columns timestamp,rate"):
        load_funding(write(tmp_path, "c.csv", "time,funding\n2024-01-01,0.0001\n"))


def test_load_funding_header_only_raises(tmp_path):
    with pytest.raises(DataError, match="no funding rows"):
        load_funding(write(tmp_path, "h.csv", "timestamp,rate\n"))


def test_load_funding_missing_file_raises(tmp_path):
    missing = tmp_path / "nope.csv"
    with pytest.raises(DataError, match="no such file") as info:
        load_funding(missing)
    assert str(missing) in str(info.value)


def test_load_funding_directory_or_fifo_raises_naming_what_it_is(tmp_path):
    import os

    fifo = tmp_path / "rates.fifo"
    os.mkfifo(fifo)  # read_csv on a FIFO would block until a writer comes
    for path, kind in ((tmp_path, "a directory"), (fifo, "a named pipe")):
        with pytest.raises(DataError, match="not a funding CSV file") as info:
            load_funding(path)
        assert str(path) in str(info.value) and kind in str(info.value)
