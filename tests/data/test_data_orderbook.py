"""celeris.data.orderbook: reading order-book snapshots (moved here from tests/llm/test_market.py)."""

from __future__ import annotations

import json

import pytest

from celeris.data import OrderBook, load_orderbook
from celeris.errors import DataError


def write(tmp_path, name: str, text: str):
    path = tmp_path / name
    path.write_text(text)
    return path


BOOK = {
    "symbol": "BTC/USDT",
    "timestamp": "2024-01-01T00:00:00Z",
    "bids": [[100.0, 2.0], ["99.95", "1"], [99.0, 10.0]],
    "asks": [[100.1, 1.0], [100.5, 4.0], [101.5, 3.0]],
}


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"bids": [[100.2, 1.0]]}, r"crossed book, best bid 100.2 >= best ask 100.1"),
        ({"bids": [[100.0, -1.0]]}, r"bids\[0\]: negative size -1"),
        ({"asks": [[100.1, 1.0], [100.0, 1.0]]}, r"asks\[1\]: price 100 out of order"),
        ({"bids": [[100.0, 1.0], [100.0, 2.0]]}, r"bids\[1\]: duplicate price 100"),
        ({"asks": [[100.1, "x"]]}, r"asks\[0\]: size 'x' is not a number"),
        ({"asks": [[100.1]]}, r"asks\[0\]: expected \[price, size\]"),
        ({"asks": []}, r"'asks' must be a non-empty list"),
    ],
)
def test_load_orderbook_bad_levels_raise_naming_file_and_level(tmp_path, change, message):
    path = write(tmp_path, "bad.json", json.dumps(BOOK | change))
    with pytest.raises(DataError, match=message) as info:
        load_orderbook(path)
    assert str(path) in str(info.value)


def test_load_orderbook_nan_literal_raises(tmp_path):
    path = write(tmp_path, "nan.json", '{"bids": [[100.0, NaN]], "asks": [[101.0, 1.0]]}')
    with pytest.raises(DataError, match=r"bids\[0\]: size is 'NaN', not a finite number"):
        load_orderbook(path)


def test_load_orderbook_invalid_json_names_line(tmp_path):
    path = write(tmp_path, "broken.json", '{"bids": [[100.0, 1.0]],\n "asks": [[101.0, 1.0]')
    with pytest.raises(DataError, match=r"line 2 column \d+: invalid JSON"):
        load_orderbook(path)


def test_load_orderbook_missing_asks_raises(tmp_path):
    path = write(tmp_path, "one.json", json.dumps({"bids": [[100.0, 1.0]]}))
    with pytest.raises(DataError, match="missing 'asks'"):
        load_orderbook(path)


def test_orderbook_from_mapping_equals_loaded_file(tmp_path):
    loaded = load_orderbook(write(tmp_path, "book.json", json.dumps(BOOK)))
    direct = OrderBook.from_mapping(BOOK)
    assert loaded.symbol == direct.symbol == "BTC/USDT"
    assert (
        loaded.bids.tolist() == direct.bids.tolist() == [[100.0, 2.0], [99.95, 1.0], [99.0, 10.0]]
    )
    assert loaded.asks.tolist() == direct.asks.tolist()


def test_llm_market_reexports_the_data_loaders():
    import celeris.data.funding
    from celeris.llm import market

    assert market.load_orderbook is load_orderbook
    assert market.OrderBook is OrderBook
    assert market.load_funding is celeris.data.funding.load_funding


def test_load_orderbook_missing_directory_or_fifo_raises_naming_the_problem(tmp_path):
    import os

    fifo = tmp_path / "book.fifo"
    os.mkfifo(fifo)
    missing = tmp_path / "nope.json"
    dangling = tmp_path / "dangling.json"
    dangling.symlink_to(tmp_path / "gone.json")
    for path, problem in (
        (missing, "no such file"),
        (dangling, "no such file"),
        (tmp_path, "is a directory, not an order-book JSON file"),
        (fifo, "is a named pipe (FIFO), not an order-book JSON file"),
    ):
        with pytest.raises(DataError) as info:
            load_orderbook(path)
        assert str(path) in str(info.value) and problem in str(info.value), info.value
