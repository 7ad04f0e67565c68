"""Verified optimisation with Optuna: the guard, the audit log, replay, and pure noise."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from celeris.backtest.strategies import Param, Strategy
from celeris.data import load
from celeris.errors import CelerisTypeError, ConfigError, DataError
from celeris.llm.audit import AuditLog, read_audit
from celeris.llm.optimizer import optimize, replay
from celeris.llm.verify import Guard, Verifier, deflated_sharpe
from tests.serving.conftest import (  # noqa: F401  (real redis-server and PostgreSQL fixtures)
    postgres_server,
    postgres_url,
    redis_server,
)


@pytest.fixture(scope="module")
def sp500() -> pd.DataFrame:
    return load("sample:sp500")


def _coin_prepare(bars: pd.DataFrame, combos: pd.DataFrame):  # type: ignore[no-untyped-def]
    n = len(bars)
    seeds = combos["seed"].to_numpy()

    def signals(rows: slice) -> tuple[np.ndarray, np.ndarray]:
        chosen = seeds[rows]
        entries = np.empty((n, len(chosen)), dtype=bool, order="F")
        exits = np.empty_like(entries)
        for j, seed in enumerate(chosen):
            rng = np.random.default_rng([int(seed), n])
            entries[:, j] = rng.random(n) < 0.05
            exits[:, j] = rng.random(n) < 0.05
        return entries, exits

    return signals


# A family of pure-noise strategies: each seed enters and exits at random (5% of bars each).
COIN = Strategy("coin_flip", (Param("seed", 0, 0, 1_000_000),), _coin_prepare)


@pytest.fixture(scope="module")
def run(sp500: pd.DataFrame, tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    path = tmp_path_factory.mktemp("audit") / "run.jsonl"
    result = optimize(
        sp500, "sma_cross", {"fast": "5:100", "slow": "20:400"}, rounds=6, per_round=4,
        audit=path, progress=False, year_days=252,
    )  # fmt: skip
    return result, path


def test_optimize_every_candidate_is_judged_and_counted(run) -> None:  # type: ignore[no-untyped-def]
    result, _ = run
    proposals = [t for t in result.trials if t.source == "optuna"]
    assert len(proposals) == 24 and result.baseline.source == "baseline"
    assert all(t.decision for t in result.trials)
    numbers = [t.number for t in result.trials]
    assert numbers == list(range(len(numbers)))
    frame = result.trials_frame()
    assert {"fast", "slow", "is_sharpe", "oos_sharpe", "dsr", "decision"} <= set(frame.columns)


def test_optimize_accepted_trials_satisfy_every_rule(run) -> None:  # type: ignore[no-untyped-def]
    result, _ = run
    guard = result.guard
    incumbent = result.baseline
    for t in result.trials[1:]:
        if t.accepted:
            assert t.in_sample["trades"] >= guard.min_trades
            assert t.in_sample["sharpe"] > incumbent.in_sample["sharpe"]
            assert t.oos is not None and incumbent.oos is not None
            assert t.oos.value > incumbent.oos.value
            assert t.dsr >= guard.dsr_threshold
            incumbent = t
    assert incumbent is result.incumbent


def test_optimize_rejections_give_their_reason(run) -> None:  # type: ignore[no-untyped-def]
    result, _ = run
    reasons = {t.decision.split(" ")[0] for t in result.rejected}
    assert reasons <= {"only", "in-sample", "out-of-sample", "deflated", "duplicate", "DSR"}
    text = result.summary()
    assert "baseline" in text and "rejected proposals" in text and "audit log" in text


def test_optimize_out_of_sample_is_the_latest_bars_in_windows(run, sp500: pd.DataFrame) -> None:  # type: ignore[no-untyped-def]
    result, _ = run
    split = result.split
    assert split["in_sample_bars"] + split["out_of_sample_bars"] == len(sp500)
    assert split["in_sample"][1] < split["out_of_sample"][0][0]
    assert len(split["out_of_sample"]) == 3
    assert split["out_of_sample"][-1][1] == sp500.index[-1]


def test_optimize_baseline_oos_equals_chained_window_backtests(run, sp500: pd.DataFrame) -> None:  # type: ignore[no-untyped-def]
    from celeris.backtest.returns import returns_metrics
    from celeris.backtest.strategies import get_strategy
    from celeris.backtest.walk_forward import backtest_window

    result, _ = run
    strat = get_strategy("sma_cross")
    v = Verifier(sp500, strat, "sharpe", Guard(), options={"year_days": 252})
    pieces = []
    for start, end in v.windows:
        # Each holdout window is one walk-forward test window (it starts in the position the
        # parameters hold there; tests/backtest/test_walk_forward.py checks those semantics).
        pf = backtest_window(sp500, strat, result.baseline.params, start, end, year_days=252)
        pieces.append(pf.returns.iloc[:, 0].to_numpy())
    expected = returns_metrics(np.concatenate(pieces), pf.ann_factor, 100_000.0)["sharpe"]
    assert result.baseline.oos is not None
    assert result.baseline.oos.value == pytest.approx(expected, rel=1e-12)


def test_audit_log_records_every_event_in_order(run) -> None:  # type: ignore[no-untyped-def]
    result, path = run
    events = read_audit(path)
    kinds = [e["event"] for e in events]
    assert kinds[0] == "run" and kinds[-1] == "result"
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    assert kinds.count("proposal") == 25 and kinds.count("decision") == 25
    assert kinds.count("backtest") == len(result.trials)
    start = events[0]
    assert start["data"]["bars"] == 5031 and len(start["data"]["sha256"]) == 64
    final = events[-1]
    assert final["improved"] == result.improved
    assert len(final["rejected"]) == len(result.rejected)


def test_replay_reproduces_every_decision(run, sp500: pd.DataFrame) -> None:  # type: ignore[no-untyped-def]
    result, path = run
    again, diffs = replay(path, sp500)
    assert diffs == []
    assert [t.decision for t in again.trials] == [t.decision for t in result.trials]


def test_replay_refuses_different_data(run, sp500: pd.DataFrame) -> None:  # type: ignore[no-untyped-def]
    _, path = run
    with pytest.raises(DataError, match="replay needs the same bars"):
        replay(path, sp500.iloc[:-1])


def test_audit_log_truncated_last_line_warns_and_keeps_the_rest(tmp_path: Path) -> None:
    path = tmp_path / "a.jsonl"
    with AuditLog(path) as log:
        log.write("proposal", round=1, params={"fast": 10}, value=float("nan"))
    with path.open("a") as fh:
        fh.write('{"run_id": "x", "seq": 2, "ev')
    with pytest.warns(UserWarning, match="truncated"):
        events = read_audit(path)
    assert len(events) == 1 and events[0]["value"] is None
    path.write_text('{"bad"\n{"event": "run"}\n')
    with pytest.raises(DataError, match="line 1: not JSON"):
        read_audit(path)


def test_noise_sweep_best_is_not_accepted_by_the_dsr(sp500: pd.DataFrame) -> None:
    # 200 pure-noise strategies: the best in-sample Sharpe looks good, the DSR sees through it.
    v = Verifier(sp500, COIN, "sharpe", Guard(), options={"year_days": 252})
    results = v.in_sample([{"seed": s} for s in range(1, 201)])
    sharpes = [r.sharpe_per_period for r in results]
    best = results[int(np.nanargmax(sharpes))]
    assert best.metrics["sharpe"] > 0.4  # annualised: it would pass a naive look
    dsr, note = deflated_sharpe(best.returns, sharpes)
    assert note == "" and dsr < 0.95


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_optimize_pure_noise_strategies_never_accepted(sp500: pd.DataFrame, seed: int) -> None:
    result = optimize(sp500, COIN, rounds=8, per_round=4, seed=seed, progress=False, year_days=252)
    assert not result.improved and result.incumbent is result.baseline
    assert len(result.rejected) == 32


def test_optimize_noise_market_trend_rule_never_accepted() -> None:
    from celeris.data import synthetic

    bars = synthetic(2500, freq="1D", seed=3, mu=0.0, sigma=0.5, jump_intensity=0.0)
    result = optimize(
        bars, "sma_cross", {"fast": "2:50", "slow": "10:200"}, rounds=6, progress=False
    )
    assert not result.improved


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"method": "grid"}, ConfigError, "unknown method 'grid'"),
        ({"objective": "win_rate"}, ConfigError, "cannot be judged"),
        ({"rounds": 0}, ConfigError, "rounds must be >= 1, got 0"),
        ({"per_round": 0}, ConfigError, "per_round must be >= 1, got 0"),
        ({"rounds": 2.5}, CelerisTypeError, "rounds must be an int >= 1, got float 2.5"),
        ({"params": {"fast": 500, "slow": 50}}, ConfigError, "no admissible"),
        ({"params": {"fst": 5}}, ConfigError, "did you mean 'fast'"),
        ({"method": "llm"}, ConfigError, "needs client"),
    ],
)
def test_optimize_bad_arguments_raise(
    sp500: pd.DataFrame, kwargs: dict[str, object], error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message):
        optimize(sp500, "sma_cross", progress=False, **kwargs)  # type: ignore[arg-type]


def test_optimize_too_few_bars_to_split_raises(sp500: pd.DataFrame) -> None:
    with pytest.raises(DataError, match="too few to split"):
        optimize(sp500.iloc[:40], "sma_cross", progress=False)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("holdout", 0.0),
        ("holdout", 0.95),
        ("windows", 0),
        ("dsr_threshold", 1.0),
        ("min_trades", -1),
    ],
)
def test_guard_bad_values_raise(field: str, value: float) -> None:
    with pytest.raises(ConfigError, match=field):
        Guard(**{field: value})  # type: ignore[arg-type]


def test_result_to_dict_is_json(run) -> None:  # type: ignore[no-untyped-def]
    result, _ = run
    doc = json.loads(json.dumps(result.to_dict()))
    assert doc["strategy"] == "sma_cross" and doc["method"] == "optuna"
    assert doc["baseline"]["params"] == {"fast": 10, "slow": 50}
    assert math.isfinite(doc["baseline"]["out_of_sample"])


def test_verifier_holdout_without_weekend_bars_annualises_like_the_whole_run() -> None:
    # 24/7 bars, then weekdays only: the holdout windows alone would infer 252 days a year.
    start = pd.date_range("2021-01-01", periods=700, freq="D", tz="UTC")
    tail = pd.bdate_range(start[-1] + pd.Timedelta(days=1), periods=300, tz="UTC")
    index = pd.DatetimeIndex(start.append(tail), name="time")
    close = 100 * np.exp(np.cumsum(np.random.default_rng(3).normal(0, 0.01, len(index))))
    bars = pd.DataFrame(
        {"open": close, "high": close * 1.01, "low": close * 0.99, "close": close, "volume": 1.0},
        index=index,
    )
    from celeris.backtest.strategies import get_strategy

    v = Verifier(bars, get_strategy("sma_cross"), "sharpe", Guard())
    assert float(v.options["year_days"]) == 365.0
    oos = v.out_of_sample({"fast": 5, "slow": 20})
    assert math.isfinite(oos.value)


def test_replay_in_a_new_process_finds_a_strategy_given_by_path(tmp_path: Path) -> None:
    import subprocess
    import sys

    (tmp_path / "mine.py").write_text(
        "from celeris.backtest import STRATEGIES\n"
        "from dataclasses import replace\n"
        "mine = replace(STRATEGIES['sma_cross'], name='mine_cross')\n"
    )
    audit = tmp_path / "run.jsonl"
    script = (
        "import sys; from celeris.data import load; from celeris.llm.optimizer import {f}\n"
        "bars = load('sample:sp500').iloc[:1500]\n"
        "{call}\n"
    )
    first = script.format(
        f="optimize",
        call=f"optimize(bars, {str(tmp_path / 'mine.py')!r} + ':mine', {{'fast': (5, 30), "
        f"'slow': (40, 120)}}, rounds=2, per_round=2, seed=1, audit={str(audit)!r})",
    )
    again = script.format(
        f="replay", call=f"_, diffs = replay({str(audit)!r}, bars); assert diffs == [], diffs"
    )
    for code in (first, again):
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
        assert done.returncode == 0, done.stderr[-2000:]


# ---- Optuna's own storage ---------------------------------------------------------------------

_SEARCH = dict(rounds=3, per_round=3, progress=False, year_days=252)


def _stored(storage: str, study_name: str) -> list[dict]:
    import optuna

    from celeris.llm.proposers import close_storage, optuna_storage

    store = optuna_storage(storage)
    try:
        study = optuna.load_study(study_name=study_name, storage=store)
        return [t.params for t in study.trials if t.state.name == "COMPLETE"]
    finally:
        close_storage(store)


def test_optimize_with_a_storage_keeps_the_study_there_and_the_local_trials(
    run, sp500: pd.DataFrame, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:  # type: ignore[no-untyped-def]
    from celeris.llm import proposers

    made: list[proposers.OptunaProposer] = []
    real = proposers.OptunaProposer

    def keep(*args, **kwargs):  # type: ignore[no-untyped-def]
        made.append(real(*args, **kwargs))
        return made[-1]

    monkeypatch.setattr("celeris.llm.optimizer.OptunaProposer", keep)
    url = f"sqlite:///{tmp_path / 'studies.db'}"
    bounds = {"fast": "5:100", "slow": "20:400"}
    stored = optimize(sp500, "sma_cross", bounds, storage=url, **_SEARCH)
    local = optimize(sp500, "sma_cross", bounds, **_SEARCH)
    pd.testing.assert_frame_equal(stored.trials_frame(), local.trials_frame())
    name = made[0].study_name
    assert name is not None and name.startswith("celeris-sma_cross-")
    params = _stored(url, name)  # the baseline and every candidate, in the study
    assert len(params) >= len(local.trials_frame())


def test_optimize_storage_on_redis_holds_the_study(
    sp500: pd.DataFrame,
    redis_server,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # type: ignore[no-untyped-def]
    from celeris.llm import proposers

    made: list[proposers.OptunaProposer] = []
    real = proposers.OptunaProposer
    monkeypatch.setattr("celeris.llm.optimizer.OptunaProposer",
                        lambda *a, **k: made.append(real(*a, **k)) or made[-1])  # fmt: skip
    url = redis_server.url
    result = optimize(sp500, "sma_cross", {"fast": "5:100", "slow": "20:400"}, storage=url,
                      **_SEARCH)  # fmt: skip
    assert len(_stored(url, made[0].study_name)) >= len(result.trials_frame())


def test_optimize_storage_in_the_registrys_postgresql_holds_the_study(
    sp500: pd.DataFrame,
    postgres_url: str,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from celeris.llm import proposers

    made: list[proposers.OptunaProposer] = []
    real = proposers.OptunaProposer
    monkeypatch.setattr("celeris.llm.optimizer.OptunaProposer",
                        lambda *a, **k: made.append(real(*a, **k)) or made[-1])  # fmt: skip
    assert postgres_url.startswith("postgresql://")  # the registry's URL, as given
    result = optimize(sp500, "sma_cross", {"fast": "5:100", "slow": "20:400"},
                      storage=postgres_url, **_SEARCH)  # fmt: skip
    assert len(_stored(postgres_url, made[0].study_name)) >= len(result.trials_frame())


def test_optimize_bad_storage_is_a_config_error_without_the_password(sp500: pd.DataFrame) -> None:
    with pytest.raises(
        ConfigError, match=r"cannot open the Optuna storage 'postgresql://u:\*\*\*@"
    ):
        optimize(sp500, "sma_cross", storage="postgresql://u:secret@127.0.0.1:1/x", **_SEARCH)
    with pytest.raises(ConfigError, match="storage must be a URL"):
        optimize(sp500, "sma_cross", storage="studies.db", **_SEARCH)
    with pytest.raises(ConfigError, match="needs method='optuna'"):
        optimize(sp500, "sma_cross", method="llm", storage="sqlite:///x.db", **_SEARCH)
