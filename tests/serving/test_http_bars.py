"""``POST /v1/forecast`` with raw OHLCV bars: the server computes the model's inputs with the
model's own feature spec, equal bit for bit to the training windows (every feature option).

One real server (uvicorn in a thread, see ``test_http.ServerThread``) serves a tiny CNN+LSTM
trained for 2 steps on every feature name of ``celeris.models.data.FEATURES`` and a tiny model
whose checkpoint records no features (windows only).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import msgpack
import numpy as np
import pandas as pd
import pytest

from celeris.models.data import FEATURES
from celeris.serving.app import build
from celeris.serving.config import load_serve_settings
from tests.serving.test_http import ServerThread

L, H = 12, 2
_WINDOWS = {"rsi": 5, "zscore": 7, "atr": 6, "sma": 4, "ema": 9, "volatility": 8}
#: Every feature name, the windowed ones with a window; close (a price level) is the target.
EVERY_OPTION = tuple(
    f"{name}_{_WINDOWS[name]}" if takes_window else name
    for name, (takes_window, _, _) in FEATURES.items()
)
FIELDS = ("open", "high", "low", "close", "volume")


def _bars(n: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    close = 100.0 * np.exp(np.cumsum(rng.normal(0.0, 0.01, n)))
    open_ = np.r_[close[0], close[:-1]]
    spread = np.abs(rng.normal(0.0, 0.004, n))
    index = pd.date_range("2024-01-01", periods=n, freq="1min", tz="UTC", name="time")
    return pd.DataFrame(
        {
            "open": open_,
            "high": np.maximum(open_, close) * (1 + spread),
            "low": np.minimum(open_, close) * (1 - spread),
            "close": close,
            "volume": rng.uniform(1.0, 100.0, n),
        },
        index=index,
    )


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[pd.DataFrame, Path]:
    """Training bars and the checkpoint fit_on_bars made of them (every feature option)."""
    from celeris.models.catalogue import get_model
    from celeris.models.checkpoint import save_checkpoint
    from celeris.models.pipeline import fit_on_bars
    from celeris.models.train import TrainConfig

    bars = _bars(300, seed=21)
    fit = fit_on_bars(
        "cnn_lstm", bars, input_size=L, horizon=H, features=EVERY_OPTION,
        model_options=get_model("cnn_lstm").tiny_config(L, H, len(EVERY_OPTION)),
        config=TrainConfig(max_steps=2, precision="fp32", progress=False),
    )  # fmt: skip
    path = tmp_path_factory.mktemp("bars-model") / "ckpt"
    save_checkpoint(fit.model, path, scaler=fit.scaler, meta=fit.meta)
    return bars, path


@pytest.fixture(scope="module")
def served(
    trained: tuple[pd.DataFrame, Path],
    tmp_path_factory: pytest.TempPathFactory,
    tiny_checkpoint_factory: Callable[..., Path],
) -> Iterator[ServerThread]:
    from celeris.serving.registry import ModelRegistry

    root = tmp_path_factory.mktemp("bars-registry") / "registry"
    reg = ModelRegistry(root)
    reg.register("allf", trained[1], stage="production")
    reg.register("plain", tiny_checkpoint_factory("cnn_lstm"), stage="production")
    settings = load_serve_settings(
        models=["allf@production", "plain@production"], registry=root, backend="torch",
        registry_poll_s=0, max_body_bytes=1 << 20, max_items=64, shadow_rows=4, cache_items=0,
        log_level="warning",
    )  # fmt: skip
    with ServerThread(build(settings)) as st:
        body = st.wait_ready()
        assert body["ready"], body
        yield st


@pytest.fixture
def client(served: ServerThread) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=served.url, timeout=30) as c:
        yield c


def _fed(served: ServerThread, name: str) -> np.ndarray:
    """The input window the server fed the model for its latest request of ``name``."""
    manager = served.server.manager  # type: ignore[union-attr]
    batch, _ = manager.validation_batch(name, manager.engine.predictor(name))
    return batch[-1]


def _columns(bars: pd.DataFrame) -> dict[str, list[float]]:
    return {f: bars[f].tolist() for f in FIELDS}


def test_forecast_bars_inputs_equal_training_windows_bit_for_bit_every_feature_option(
    served, client, trained
):
    from celeris.models.data import make_windows
    from celeris.models.features import spec_of
    from celeris.models.predictor import Predictor

    bars, path = trained
    predictor = Predictor.load(path, backend="torch")
    spec = spec_of(predictor.meta)
    assert spec.features == EVERY_OPTION and spec.lookback == 8
    windows = make_windows(spec.inputs(bars), L, H)  # what training cut its windows from
    # a training window, a validation one and the last one, each from the first training bar
    for k in (0, len(windows) * 3 // 4, len(windows) - 1):
        end = int(windows.end[k]) + spec.lookback  # the window's last bar in `bars`
        history = bars.iloc[: end + 1]
        r = client.post("/v1/forecast", json={"model": "allf", "bars": {"BTC": _columns(history)}})
        assert r.status_code == 200, r.text
        fed = _fed(served, "allf")
        assert fed.dtype == windows.x.dtype == np.float32
        assert fed.tobytes() == np.ascontiguousarray(windows.x[k]).tobytes()
        forecast = r.json()["forecasts"]["BTC"]["forecast"]
        np.testing.assert_allclose(forecast, predictor.predict(windows.x[k : k + 1])[0], rtol=1e-6)
    # msgpack rows as a binary float64 array: the same inputs
    rows = bars.iloc[: end + 1][list(FIELDS)].to_numpy()
    body = msgpack.packb(
        {
            "model": "allf",
            "bars": {"BTC": {"shape": list(rows.shape), "dtype": "<f8", "data": rows.tobytes()}},
        }
    )
    r = client.post("/v1/forecast", content=body, headers={"Content-Type": "application/msgpack"})
    assert r.status_code == 200, r.text
    assert _fed(served, "allf").tobytes() == np.ascontiguousarray(windows.x[k]).tobytes()


def test_forecast_bars_many_symbols_rows_and_columns_forms(served, client, trained):
    bars, _ = trained
    a, b = bars.iloc[:100], bars.iloc[50:200]  # different lengths and starts
    body = {"model": "allf", "bars": {"A": _columns(a), "B": b[list(FIELDS)].values.tolist()}}
    r = client.post("/v1/forecast", json=body)
    assert r.status_code == 200, r.text
    out = r.json()["forecasts"]
    assert list(out) == ["A", "B"] and all(len(out[s]["forecast"]) == H for s in out)
    fed = served.server.manager.validation_batch(  # type: ignore[union-attr]
        "allf",
        served.server.manager.engine.predictor("allf"),  # type: ignore[union-attr]
    )[0][-2:]
    from celeris.models.features import spec_of

    spec = spec_of(served.server.manager.engine.predictor("allf").meta)  # type: ignore[union-attr]
    for row, frame in zip(fed, (a, b), strict=True):
        expected = spec.inputs(frame).to_numpy()[-L:].astype(np.float32)
        assert row.tobytes() == expected.tobytes()


def test_forecast_bars_too_few_is_422_naming_how_many_are_needed(client, trained):
    bars, _ = trained
    r = client.post(
        "/v1/forecast", json={"model": "allf", "bars": {"BTC": _columns(bars.iloc[:19])}}
    )
    assert r.status_code == 422
    body = r.json()
    assert body["needed"] == 20  # lookback 8 + input_size 12
    assert "bars['BTC'] has 19 bar(s)" in body["detail"] and "at least 20" in body["detail"]


@pytest.mark.parametrize(
    ("bars", "fragment"),
    [
        ({"BTC": {"close": [1.0] * 30}}, "lacks high, low, volume"),
        ({"BTC": {**{f: [1.0] * 30 for f in FIELDS}, "clsoe": [1.0]}}, "did you mean 'close'"),
        ({"BTC": {**{f: [1.0] * 30 for f in FIELDS}, "close": [1.0] * 29}}, "different lengths"),
        ({"BTC": [[1.0, 1.0, 1.0, 1.0]] * 30}, "as rows must be [T, 5]"),
        ({"BTC": {**{f: [1.0] * 30 for f in FIELDS}, "close": ["1"] * 30}}, "a string"),
        ({"BTC": {**{f: [1.0] * 30 for f in FIELDS}, "open": [True] * 30}}, "a boolean"),
        ({"BTC": {**{f: [1.0] * 30 for f in FIELDS}, "open": [1.0] * 29}}, "different lengths"),
        ({"BTC": "x"}, "must be columns"),
        ({}, "non-empty object"),
    ],
)
def test_forecast_bad_bars_are_422_naming_what(client, bars, fragment):
    r = client.post("/v1/forecast", json={"model": "allf", "bars": bars})
    assert r.status_code == 422, r.text
    assert fragment in r.json()["detail"]


def test_forecast_bars_non_finite_bar_or_input_is_422_naming_it(client, trained):
    bars, _ = trained
    cols = _columns(bars.iloc[:40])
    cols["volume"][30] = None
    r = client.post("/v1/forecast", json={"model": "allf", "bars": {"BTC": cols}})
    assert r.status_code == 422 and "non-finite volume (nan) at bar 30 of 40" in r.json()["detail"]
    cols = _columns(bars.iloc[:40])
    cols["volume"][35] = 0.0  # log_volume = log(0)
    r = client.post("/v1/forecast", json={"model": "allf", "bars": {"BTC": cols}})
    assert r.status_code == 422
    assert "feature 'log_volume' is -inf at bar 35" in r.json()["detail"]


def test_forecast_bars_and_histories_together_or_neither_is_422(client, trained):
    bars, _ = trained
    both = {"model": "allf", "bars": {"A": _columns(bars)}, "histories": {"A": [1.0]}}
    r = client.post("/v1/forecast", json=both)
    assert r.status_code == 422 and "not both" in r.json()["detail"]
    r = client.post("/v1/forecast", json={"model": "allf"})
    assert r.status_code == 422 and '"bars"' in r.json()["detail"]
    assert "at least 20 each" in r.json()["detail"]


def test_forecast_bars_for_a_model_without_features_is_422(client, trained):
    bars, _ = trained
    r = client.post("/v1/forecast", json={"model": "plain", "bars": {"A": _columns(bars)}})
    assert r.status_code == 422 and "records no input features" in r.json()["detail"]


def test_models_route_lists_the_feature_spec(client):
    models = {m["name"]: m for m in client.get("/v1/models").json()["models"]}
    assert models["allf"]["feature_spec"] == {
        "version": 1, "features": list(EVERY_OPTION), "lookback": 8
    }  # fmt: skip
    assert models["allf"]["bars_needed"] == 20
    assert models["plain"]["feature_spec"] is None and models["plain"]["bars_needed"] is None
