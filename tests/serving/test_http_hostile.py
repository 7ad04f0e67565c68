"""Hostile and clumsy clients against the HTTP API, in process (Starlette's TestClient runs the
app and its lifespan): content types, tokens, symbol ids, strict numbers, degenerate
histories, large bodies, and a hypothesis fuzz of both codecs that must never get a 5xx.

The connection-level limits (header size, slow clients, disconnects) need a real server and raw
sockets: ``test_http_limits.py``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import msgpack
import numpy as np
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.testclient import TestClient

from celeris.errors import ConfigError, DataError
from celeris.serving.app import build
from celeris.serving.config import (
    MIN_TOKEN_LENGTH,
    exposure_warning,
    is_loopback,
    load_serve_settings,
)
from celeris.serving.errors import SymbolLimitReached
from celeris.serving.http import _json_numbers_only, forecast_signals
from celeris.serving.manager import SymbolTable

L = 8
JSON = {"Content-Type": "application/json"}
MSGPACK = {"Content-Type": "application/msgpack", "Accept": "application/json"}
PUBLISH = "publish-token-0123456789"
ADMIN = "admin-token-0123456789"


class LevelPredictor:
    """A one-feature price model: forecasts the last price up 1% for 2 steps."""

    input_size, n_features, horizon = L, 1, 2
    meta: ClassVar[dict[str, str]] = {"target_kind": "level"}

    def predict(self, x: np.ndarray) -> np.ndarray:
        return np.repeat(x[:, -1, :1] * 1.01, 2, axis=1)  # [B, 2]


class ThreeFeaturePredictor(LevelPredictor):
    """The same on three features per bar (the target is feature 0)."""

    n_features = 3


class RecordingPublisher:
    """Stands in for the signal feed: keeps what was published."""

    def __init__(self) -> None:
        self.records: list[tuple[int, int, float]] = []

    def publish(self, symbol_id: int, signal: int, confidence: float, head: Any, **_: Any) -> int:
        self.records.append((symbol_id, signal, confidence))
        return len(self.records) - 1

    def close(self) -> None:
        pass


def _app(root: Path, publisher: Any = None, **overrides: Any) -> Any:
    from contextlib import asynccontextmanager

    from celeris.serving.batcher import BatcherConfig
    from celeris.serving.engine import Engine
    from celeris.serving.http import create_app
    from celeris.serving.manager import ModelManager
    from celeris.serving.metrics import PrometheusMetrics
    from celeris.serving.registry import ModelRegistry

    metrics = PrometheusMetrics(system=False)
    engine = Engine(config=BatcherConfig(max_wait_ms=(1, 1, 1, 1)), metrics=metrics)

    @asynccontextmanager
    async def lifespan(app):  # the engine's batchers live on the app's loop
        await engine.add_version("lvl", "1", LevelPredictor())
        await engine.add_version("multi", "1", ThreeFeaturePredictor())
        app.state.celeris.manager.adopt()
        yield
        await engine.close()

    base = {"registry": root / "reg", "log_level": "warning", "max_body_bytes": 4 << 20}
    serve_settings = load_serve_settings(**{**base, **overrides})
    manager = ModelManager(engine, ModelRegistry(root / "reg"), serve_settings, metrics=metrics)
    return create_app(manager, publisher=publisher, lifespan=lifespan)


@contextlib.contextmanager
def _client(root: Path, publisher: Any = None, **overrides: Any) -> Iterator[TestClient]:
    app = _app(root, publisher, **overrides)
    with TestClient(app, raise_server_exceptions=False) as client:
        yield client


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    """One app for the tests that change nothing it holds."""
    with _client(tmp_path_factory.mktemp("hostile")) as client:
        yield client


def _walk(n: int = 1, seed: int = 0, length: int = L) -> list[list[float]]:
    rng = np.random.default_rng(seed)
    return (100 + rng.standard_normal((n, length)).cumsum(axis=1)).round(4).tolist()


# -- B3: content types, publish token, exposure -------------------------------------------------


@pytest.mark.parametrize(
    "content_type",
    [None, "text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x"],
)
@pytest.mark.parametrize("path", ["/v1/models/lvl/predict", "/v1/forecast"])
def test_post_without_json_or_msgpack_content_type_is_415(shared, path, content_type):
    # The content types a browser may send cross-origin without a CORS preflight.
    body = json.dumps({"model": "lvl", "inputs": _walk()[0], "histories": {"BTC": _walk()[0]}})
    headers = {"Content-Type": content_type} if content_type else {}
    if content_type is None:
        # httpx sets no type for raw content; make sure nothing else adds one.
        request = shared.build_request("POST", path, content=body.encode(), headers=headers)
        assert "content-type" not in request.headers
        r = shared.send(request)
    else:
        r = shared.post(path, content=body.encode(), headers=headers)
    assert r.status_code == 415, r.text
    assert r.json()["error"] == "unsupported_media_type"
    assert "application/json" in r.json()["detail"]


def test_admin_post_with_body_but_not_json_is_415(tmp_path):
    with _client(tmp_path, admin_token=ADMIN) as c:
        r = c.post(
            "/v1/admin/models",
            content=b'{"name": "lvl", "checkpoint": "/nowhere"}',
            headers={"Authorization": f"Bearer {ADMIN}", "Content-Type": "text/plain"},
        )
        assert r.status_code == 415, r.text


def test_json_suffix_and_msgpack_types_are_accepted(shared):
    x = _walk()[0]
    for headers, content in (
        ({"Content-Type": "application/json; charset=utf-8"}, orjson.dumps({"inputs": x})),
        ({"Content-Type": "application/vnd.celeris+json"}, orjson.dumps({"inputs": x})),
        ({"Content-Type": "application/x-msgpack"}, msgpack.packb({"inputs": x})),
    ):
        r = shared.post("/v1/models/lvl/predict", content=content, headers=headers)
        assert r.status_code == 200, (headers, r.text)


def test_forecast_requires_publish_token_when_set_and_predict_does_not(tmp_path):
    publisher = RecordingPublisher()
    body = {"model": "lvl", "histories": {"BTC-USD": _walk()[0]}}
    with _client(tmp_path, publisher, publish_token=PUBLISH) as c:
        for headers in (
            {},
            {"Authorization": "Bearer nope"},
            {"Authorization": f"Basic {PUBLISH}"},
        ):
            r = c.post("/v1/forecast", json=body, headers=headers)
            assert r.status_code == 401 and r.headers["WWW-Authenticate"] == "Bearer"
            assert "CELERIS_PUBLISH_TOKEN" in r.json()["detail"]
        assert publisher.records == []  # nothing reached the feed
        r = c.post("/v1/forecast", json=body, headers={"Authorization": f"Bearer {PUBLISH}"})
        assert r.status_code == 200, r.text
        assert len(publisher.records) == 1
        assert c.post("/v1/models/lvl/predict", json={"inputs": _walk()[0]}).status_code == 200


@pytest.mark.parametrize(
    ("host", "loopback"),
    [("127.0.0.1", True), ("127.9.9.9", True), ("::1", True), ("localhost", True),
     ("0.0.0.0", False), ("::", False), ("10.0.0.5", False), ("example.org", False)],
)  # fmt: skip
def test_is_loopback_host_classification(host, loopback):
    assert is_loopback(host) is loopback


def test_build_warns_when_listening_beyond_loopback_without_publish_token(tmp_path, caplog):
    assert exposure_warning(load_serve_settings(registry=tmp_path, host="127.0.0.1")) is None
    assert (
        exposure_warning(
            load_serve_settings(registry=tmp_path, host="0.0.0.0", publish_token=PUBLISH)
        )
        is None
    )
    settings = load_serve_settings(registry=tmp_path, host="0.0.0.0", models=["btc"])
    with caplog.at_level(logging.WARNING, logger="celeris.serving"):
        build(settings)  # assembles only: nothing is loaded or bound until the app starts
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert any("beyond loopback" in r.getMessage() for r in warnings), caplog.text
    assert "CELERIS_PUBLISH_TOKEN" in caplog.text


# -- B9: tokens --------------------------------------------------------------------------------


def test_admin_token_with_surrounding_whitespace_is_stripped_and_matches(tmp_path):
    settings = load_serve_settings(registry=tmp_path, admin_token=f"  {ADMIN}\n")
    assert settings.admin_token is not None
    assert settings.admin_token.get_secret_value() == ADMIN
    with _client(tmp_path, admin_token=f"{ADMIN}\n") as c:
        r = c.post(
            "/v1/admin/models/lvl/ab",
            json={"version": 1},
            headers={"Authorization": f"Bearer {ADMIN}"},
        )
        # Authorised: the refusal is about the model (adopted, not in the registry), not 401.
        assert r.status_code != 401, r.text


@pytest.mark.parametrize("field", ["admin_token", "publish_token"])
def test_token_shorter_than_minimum_is_refused_without_echoing_it(tmp_path, field):
    short = "s3cr3t-pw"
    assert len(short) < MIN_TOKEN_LENGTH
    with pytest.raises(ConfigError) as info:
        load_serve_settings(registry=tmp_path, **{field: short})
    message = str(info.value)
    assert short not in message and f"at least {MIN_TOKEN_LENGTH}" in message
    assert ("CELERIS_ADMIN_TOKEN" if field == "admin_token" else "CELERIS_PUBLISH_TOKEN") in message
    # Whitespace only still means "not configured".
    assert getattr(load_serve_settings(registry=tmp_path, **{field: "  \n"}), field) is None


# -- B1: symbol ids ----------------------------------------------------------------------------


def test_symbol_table_refuses_new_symbols_past_its_limit_all_or_none():
    table = SymbolTable(["ETH-USD", "BTC-USD"], limit=4)
    assert table.ids(["BTC-USD", "SOL-USD"]) == [1, 2]
    with pytest.raises(SymbolLimitReached, match="never reused"):
        table.ids(["ADA-USD", "XRP-USD"])  # room for one, not two: neither is assigned
    assert table.mapping() == {"ETH-USD": 0, "BTC-USD": 1, "SOL-USD": 2}
    assert table.ids(["ADA-USD", "ADA-USD", "ETH-USD"]) == [3, 3, 0]
    with pytest.raises(SymbolLimitReached):
        table.id("DOGE-USD")
    assert len(table) == 4 and table.id("SOL-USD") == 2  # known symbols keep working


@pytest.mark.parametrize(
    "name", ["", " BTC", "BTC USD", 'BTC"', "BTC\n", "-BTC", "A" * 65, "BTC\u00e9", 7]
)
def test_symbol_table_refuses_names_outside_the_symbol_rule(name):
    with pytest.raises(DataError, match="1-64 characters"):
        SymbolTable().id(name)  # type: ignore[arg-type]


def test_settings_refuse_bad_or_too_many_configured_symbols(tmp_path):
    with pytest.raises(ConfigError, match="CELERIS_SERVE_SYMBOLS"):
        load_serve_settings(registry=tmp_path, symbols="BTC-USD,ETH USD")
    with pytest.raises(ConfigError, match="CELERIS_SERVE_MAX_SYMBOLS"):
        load_serve_settings(registry=tmp_path, symbols="A,B,C", max_symbols=2)
    ok = load_serve_settings(registry=tmp_path, symbols="BTC/USDT:USDT,ES.c.0", max_symbols=2)
    assert ok.symbols == ("BTC/USDT:USDT", "ES.c.0")


def test_forecast_new_symbols_past_max_symbols_are_422_and_the_table_stays_bounded(tmp_path):
    publisher = RecordingPublisher()
    with _client(tmp_path, publisher, symbols="BTC-USD", max_symbols=3) as c:
        x = _walk(4, seed=1)

        def post(*symbols: str) -> Any:
            hist = {s: x[i] for i, s in enumerate(symbols)}
            return c.post("/v1/forecast", json={"model": "lvl", "histories": hist})

        assert post("A1", "A2").status_code == 200
        r = post("BTC-USD", "A3")
        assert r.status_code == 422 and r.json()["error"] == "symbol_limit", r.text
        assert "CELERIS_SERVE_MAX_SYMBOLS" in r.json()["detail"]
        assert len(publisher.records) == 2  # the refused request published nothing
        assert c.get("/v1/symbols").json()["symbols"] == {"BTC-USD": 0, "A1": 1, "A2": 2}
        r = post("A2", "BTC-USD")  # symbols with ids keep working
        assert r.status_code == 200
        assert [r.json()["forecasts"][s]["symbol_id"] for s in ("A2", "BTC-USD")] == [2, 0]


@pytest.mark.parametrize("symbol", ["BTC USD", "<script>", "A" * 65, ""])
def test_forecast_symbol_name_outside_the_rule_is_422(shared, symbol):
    r = shared.post("/v1/forecast", json={"model": "lvl", "histories": {symbol: _walk()[0]}})
    assert r.status_code == 422, r.text
    assert "symbol" in r.json()["detail"]


def test_forecast_msgpack_non_string_symbol_is_422(shared):
    body = msgpack.packb({"model": "lvl", "histories": {7: _walk()[0]}})
    r = shared.post("/v1/forecast", content=body, headers=MSGPACK)
    assert r.status_code == 422 and "strings" in r.json()["detail"]


# -- B9: strict numbers, magnitudes, degenerate histories ---------------------------------------


def _with(value: Any, at: tuple[int, ...], rows: list[Any]) -> list[Any]:
    out = json.loads(json.dumps(rows))
    target = out
    for i in at[:-1]:
        target = target[i]
    target[at[-1]] = value
    return out


@pytest.mark.parametrize("codec", ["json", "msgpack"])
@pytest.mark.parametrize(
    ("value", "kind"),
    [("1", "a string"), (True, "a boolean"), (False, "a boolean"), ({"a": 1}, "an object")],
)
def test_predict_string_or_boolean_among_numbers_is_422_naming_its_position(
    shared, codec, value, kind
):
    x = np.asarray(_walk(2, seed=2))[:, :, None].tolist()  # [2, L, 1]
    bad = _with(value, (1, 3, 0), x)
    body = {"inputs": bad}
    if codec == "json":
        r = shared.post("/v1/models/lvl/predict", content=orjson.dumps(body), headers=JSON)
    else:
        r = shared.post("/v1/models/lvl/predict", content=msgpack.packb(body), headers=MSGPACK)
    assert r.status_code == 422, r.text
    detail = r.json()["detail"]
    assert "inputs[1][3][0]" in detail and kind in detail, detail


@pytest.mark.parametrize("codec", ["json", "msgpack"])
def test_forecast_string_or_boolean_among_numbers_is_422_naming_the_symbol(shared, codec):
    hist = {"BTC-USD": _walk(1, seed=3)[0], "ETH-USD": _with("7", (5,), _walk(1, seed=4)[0])}
    body = {"model": "lvl", "histories": hist}
    if codec == "json":
        r = shared.post("/v1/forecast", content=orjson.dumps(body), headers=JSON)
    else:
        r = shared.post("/v1/forecast", content=msgpack.packb(body), headers=MSGPACK)
    assert r.status_code == 422, r.text
    assert "histories['ETH-USD'][5]" in r.json()["detail"]


def test_json_body_with_t_f_quotes_outside_arrays_still_answers(shared):
    # Options whose text holds the characters the fast check counts: answered normally.
    body = {"inputs": _walk()[0], "key": 'true{false}"tf"', "priority": "fast"}
    r = shared.post("/v1/models/lvl/predict", content=orjson.dumps(body), headers=JSON)
    assert r.status_code == 422 and "unknown priority" in r.json()["detail"]
    body["priority"] = "critical"
    r = shared.post("/v1/models/lvl/predict", content=orjson.dumps(body), headers=JSON)
    assert r.status_code == 200, r.text


@pytest.mark.parametrize(
    ("doc", "expected"),
    [
        ({"inputs": [[1.0, 2.5e-3, -4]], "key": "tft{"}, True),
        ({"inputs": [[1.0, None, 3]]}, True),
        ({"inputs": [[1.0, True]]}, False),
        ({"inputs": [[1.0, False]]}, False),
        ({"inputs": [[1.0, "2"]]}, False),
        ({"inputs": [[1.0, {}]]}, False),
        ({"inputs": [1.0], "histories": {"tf": [1.0, 2.0]}}, True),
        ({"inputs": [1.0], "key": 'a"b'}, False),  # an escape: not counted, checked instead
        ({"inputs": [1.0], "flag": True}, False),  # a boolean outside arrays: checked too
        # Many names (the counting pass instead of a find per occurrence):
        ({"histories": {f"t{i}": [1.0, 2.0] for i in range(40)}}, True),
        ({"histories": {**{f"t{i}": [1.0] for i in range(40)}, "x": [1.0, True]}}, False),
        ({"histories": {**{f"t{i}": [1.0] for i in range(40)}, "x": [1.0, "2"]}}, False),
    ],
)
def test_json_numbers_only_is_exact(doc, expected):
    body = json.dumps(doc).encode()
    assert _json_numbers_only(body, json.loads(body)) is expected


def test_value_beyond_max_abs_value_is_422_naming_item_and_bar(shared):
    x = _walk(2, seed=5)
    x[1][6] = 3e30
    r = shared.post("/v1/models/lvl/predict", json={"inputs": x})
    assert r.status_code == 422, r.text
    detail = r.json()["detail"]
    assert "inputs[1]" in detail and "bar 6" in detail and "CELERIS_SERVE_MAX_ABS_VALUE" in detail


def test_huge_integer_is_422_not_500(shared):
    body = b'{"inputs": [1, 2, 3, 4, 5, 6, 7, ' + b"9" * 400 + b"]}"
    r = shared.post("/v1/models/lvl/predict", content=body, headers=JSON)
    assert r.status_code in (400, 422), r.text  # orjson may refuse it first


@pytest.mark.parametrize(
    "array",
    [
        {"shape": [float("inf")], "dtype": "<f4", "data": b"\0" * 32},  # the 500
        {"shape": [True, L], "dtype": "<f4", "data": b"\0" * 32},
        {"shape": ["8"], "dtype": "<f4", "data": b"\0" * 32},
        {"shape": [-1], "dtype": "<f4", "data": b"\0" * 32},
        {"shape": [1, 1, 1, L], "dtype": "<f4", "data": b"\0" * 32},
        {"shape": [L], "dtype": "<i4", "data": b"\0" * 32},
        {"shape": [L], "dtype": 7, "data": b"\0" * 32},
        {"shape": [L], "dtype": "<f4", "data": b"\0" * 31},
        {"shape": [2**62, 2**62], "dtype": "<f8", "data": b""},
    ],
)
def test_malformed_msgpack_binary_array_is_422(shared, array):
    r = shared.post(
        "/v1/models/lvl/predict", content=msgpack.packb({"inputs": array}), headers=MSGPACK
    )
    assert r.status_code == 422, r.text
    assert "binary array" in r.json()["detail"]


@pytest.mark.parametrize(
    "history",
    [[0.0] * L, [100.0] * L],  # all-zero (non-positive) and constant
)
def test_forecast_degenerate_history_is_never_published_with_confidence(tmp_path, history):
    publisher = RecordingPublisher()
    with _client(tmp_path, publisher) as c:
        body = {"model": "lvl", "histories": {"FLAT": history, "LIVE": _walk(1, seed=6)[0]}}
        r = c.post("/v1/forecast", json=body)
        if history[0] <= 0:  # a price level must be positive
            assert r.status_code == 422, r.text
            assert "histories['FLAT']" in r.json()["detail"] and "positive" in r.json()["detail"]
            assert publisher.records == []
            return
        assert r.status_code == 200, r.text
        flat, live = r.json()["forecasts"]["FLAT"], r.json()["forecasts"]["LIVE"]
        assert flat["confidence"] == 0.0 and flat["signal"] == 0
        assert "seq" not in flat and "not published" in flat["warning"]
        assert "seq" in live and "warning" not in live
        assert [rec[0] for rec in publisher.records] == [live["symbol_id"]]


def test_forecast_signals_flat_or_non_positive_forecast_is_unusable():
    x = np.asarray([[100.0] * L, np.linspace(100, 107, L), np.linspace(100, 107, L)])[:, :, None]
    f = np.asarray([[105.0, 106.0], [108.0, 109.0], [1.0, -3.0]])
    signal, confidence, _, usable = forecast_signals(x, f, kind="level")
    assert usable.tolist() == [False, True, False]
    assert signal.tolist() == [0, 1, 0] and confidence[0] == 0.0 and confidence[2] == 0.0
    assert 0 < confidence[1] <= 1
    _, confidence, _, usable = forecast_signals(np.zeros((1, L, 1)), f[:1], kind="return")
    assert usable.tolist() == [False] and confidence.tolist() == [0.0]


def test_multi_feature_forecast_checks_target_positivity_only(shared):
    rows = (100 + np.random.default_rng(7).standard_normal((L, 3)).cumsum(axis=0)).tolist()
    for row in rows:
        row[2] = -5.0  # a non-price feature may be negative
    r = shared.post("/v1/forecast", json={"model": "multi", "histories": {"BTC-USD": rows}})
    assert r.status_code == 200, r.text


# -- B9: large bodies --------------------------------------------------------------------------


def test_large_body_is_parsed_off_the_event_loop_small_one_on_it(shared):
    api = shared.app.state.celeris  # type: ignore[attr-defined]
    seen: list[str] = []
    original = api._predict_input

    def spy(*args: Any) -> Any:
        seen.append(threading.current_thread().name)
        return original(*args)

    api._predict_input = spy
    try:
        small = _walk(1)
        big = _walk(3000, seed=8, length=2 * L)  # ~ 430 KB of JSON, over max_items (2048)
        assert len(orjson.dumps({"inputs": big})) > 256 << 10
        assert shared.post("/v1/models/lvl/predict", json={"inputs": small}).status_code == 200
        assert shared.post("/v1/models/lvl/predict", json={"inputs": big}).status_code == 413
    finally:
        api._predict_input = original
    # The 413 is the item limit (max_items) found by the parse: it ran, in a worker thread.
    loop_thread, worker = seen
    assert loop_thread != worker and worker != threading.main_thread().name


def test_json_body_over_max_json_bytes_is_413_and_msgpack_of_the_size_is_served(tmp_path):
    history = np.linspace(100.0, 110.0, 12_000)  # one long history: the last L bars are used
    with _client(tmp_path, max_json_bytes=64 << 10) as c:
        r = c.post("/v1/models/lvl/predict", json={"inputs": history.tolist()})
        assert r.status_code == 413, r.text
        assert "CELERIS_SERVE_MAX_JSON_BYTES" in r.json()["detail"]
        assert "msgpack" in r.json()["detail"]
        binary = {"shape": [1, len(history)], "dtype": "<f8", "data": history.tobytes()}
        body = msgpack.packb({"inputs": binary})
        assert len(body) > 64 << 10
        r = c.post("/v1/models/lvl/predict", content=body, headers=MSGPACK)
        assert r.status_code == 200, r.text


def test_body_over_max_body_bytes_is_413(shared):
    big = b'{"inputs": [' + b"1.0," * (1 << 20) + b"1.0]}"
    r = shared.post("/v1/models/lvl/predict", content=big, headers=JSON)
    assert r.status_code == 413 and "CELERIS_SERVE_MAX_BODY_BYTES" in r.json()["detail"]


# -- B6: no body gets a 5xx ----------------------------------------------------------------------

_odd_floats = st.sampled_from([math.inf, -math.inf, math.nan, 1e300, -0.0, 3.5e38, 1e-45])
_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**64 - 1),
    st.floats(allow_nan=True, allow_infinity=True),
    _odd_floats,
    st.text(max_size=8),
    st.binary(max_size=16),
)
_values = st.recursive(
    _scalars,
    lambda inner: st.lists(inner, max_size=6) | st.dictionaries(st.text(max_size=6), inner, max_size=4),
    max_leaves=30,
)  # fmt: skip
_numbers = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True, width=32),
    _odd_floats,
    st.integers(min_value=-(2**63), max_value=2**64 - 1),
    st.integers(min_value=10**308, max_value=10**400),  # beyond float64: JSON only
    st.booleans(),
    st.none(),
    st.text(max_size=3),
)
_binary_arrays = st.fixed_dictionaries(
    {
        "shape": st.lists(
            st.one_of(
                st.integers(-2, 2 * L), st.integers(2**31, 2**64 - 1), _odd_floats,
                st.booleans(), st.text(max_size=3), st.none(),
            ),
            max_size=4,
        ),
        "dtype": st.one_of(
            st.sampled_from(["<f4", "<f8", ">f4", "<f2", "<i4", "|b1", "O", "", "V8", "U3"]),
            _scalars,
        ),
        "data": st.one_of(st.binary(max_size=8 * 3 * L), _scalars),
    },
    optional={"extra": _scalars},
)  # fmt: skip
_histories = st.one_of(
    st.lists(_numbers, min_size=0, max_size=L + 2),
    st.lists(st.lists(_numbers, min_size=0, max_size=4), min_size=0, max_size=L + 2),
    st.lists(
        st.lists(st.lists(_numbers, min_size=1, max_size=3), min_size=L, max_size=L), max_size=3
    ),
    _binary_arrays,
    _values,
)
_options = st.fixed_dictionaries(
    {},
    optional={
        "priority": st.one_of(st.sampled_from(["high", "low", "HIGH"]), st.integers(-2, 5), _values),
        "key": st.one_of(st.text(max_size=20), _values),
        "model": st.one_of(st.sampled_from(["lvl", "multi", "nope"]), _values),
    },
)  # fmt: skip
_bodies = st.one_of(
    st.builds(lambda h, o: {**o, "inputs": h}, _histories, _options),
    st.builds(
        lambda hs, o: {"model": "lvl", **o, "histories": hs},
        st.one_of(st.dictionaries(st.text(max_size=10), _histories, max_size=4), _values),
        _options,
    ),
    _values,
)
_ROUTES = ["/v1/models/lvl/predict", "/v1/models/multi/predict", "/v1/forecast"]


def _post_both_codecs(client: TestClient, route: str, doc: Any) -> None:
    """POST ``doc`` as msgpack and as JSON (where each can carry it); no answer may be 5xx."""
    try:
        packed = msgpack.packb(doc, use_bin_type=True)
    except (OverflowError, TypeError, ValueError):  # an integer beyond 64 bits
        packed = None
    if packed is not None:
        r = client.post(route, content=packed, headers=MSGPACK)
        assert r.status_code < 500, (doc, r.status_code, r.text)
        assert r.status_code == 200 or "error" in r.json()
    try:  # the stdlib writes big integers and NaN/Infinity, which the server must refuse
        text = json.dumps(doc, allow_nan=True).encode()
    except (TypeError, ValueError):  # bytes are not JSON
        return
    r = client.post(route, content=text, headers=JSON)
    assert r.status_code < 500, (text[:300], r.status_code, r.text)


@settings(
    max_examples=300,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(doc=_bodies, route=st.sampled_from(_ROUTES))
def test_fuzzed_json_and_msgpack_bodies_never_get_a_5xx(shared, doc, route):
    _post_both_codecs(shared, route, doc)


@settings(max_examples=200, deadline=None, derandomize=True)
@given(array=_binary_arrays, symbol=st.booleans())
def test_fuzzed_msgpack_binary_arrays_never_get_a_5xx(shared, array, symbol):
    if symbol:
        _post_both_codecs(shared, "/v1/forecast", {"model": "lvl", "histories": {"BTC": array}})
    else:
        _post_both_codecs(shared, "/v1/models/multi/predict", {"inputs": array})
