"""NHITS: Celeris beside NeuralForecast on the same real series, windows and hyper-parameters.

    python benchmarks/bench_forecast.py --nf-python /path/to/nf-venv/bin/python [--steps 300]

NeuralForecast (and its 1.7 GB of dependencies) lives in its own virtualenv, e.g.
``python -m venv nfvenv && nfvenv/bin/pip install -c constraints.txt torch==2.13.0 neuralforecast``;
this script runs it there as a worker process and compares on:

* data: daily S&P 500 closes 1999-2018 (``sample:sp500``, real); horizon 5, input 60;
* training: the bars up to the first test origin, ``max_steps`` steps of 256 windows, lr 1e-3
  halved 3 times (NeuralForecast's schedule), MAE loss, per-window robust scaling
  (``scaler_type="robust"``), seed 1, fp32;
* test: one forecast per origin over the last ``--test-bars`` bars (rolling origin, no refit),
  the same origins for both and for the naive last-value and drift baselines;
* speed: training time, ``nf.predict`` vs Celeris ``Predictor.predict`` for 1 and 1,000
  series (p50/p95), and the bare forward pass of each model at batch 1 and 1,000.

Celeris's predictors are timed for every backend *and the default* (``Predictor.load(dir)``,
which runs the fastest export verified on the held-out windows), interleaved: ``--rounds``
rounds, each timing every backend once in a shuffled order; the table gives the median over
rounds of each round's p50 and p95 (the machine may be shared: the median of rounds is what to
read, the spread says how noisy it was). Without ``--nf-python`` only Celeris runs.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np

H, L, BATCH, LR, SEED = 5, 60, 256, 1e-3, 1


def pct(times: list[float]) -> dict[str, float]:
    a = np.asarray(times) * 1e3
    return {"p50_ms": float(np.percentile(a, 50)), "p95_ms": float(np.percentile(a, 95))}


def timed(fn, repeats: int, warmup: int = 2) -> dict[str, float]:
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return pct(out)


def worker_nf(series: np.ndarray, n_test: int, steps: int, out: Path) -> None:
    import logging
    import warnings

    warnings.filterwarnings("ignore")
    logging.disable(logging.WARNING)
    import pandas as pd
    import torch

    t0 = time.perf_counter()
    from neuralforecast import NeuralForecast
    from neuralforecast.models import NHITS

    t_import = time.perf_counter() - t0
    df = pd.DataFrame({"unique_id": "spx", "ds": np.arange(len(series)), "y": series})
    model = NHITS(
        h=H, input_size=L, max_steps=steps, windows_batch_size=BATCH, learning_rate=LR, scaler_type="robust",
        random_seed=SEED, val_check_steps=steps, accelerator="cpu", enable_progress_bar=False,
        enable_model_summary=False, logger=False, enable_checkpointing=False,
    )  # fmt: skip
    nf = NeuralForecast(models=[model], freq=1)
    # Fit alone on the training bars (for the training time), then the rolling forecasts.
    first_origin = len(series) - H - n_test
    t0 = time.perf_counter()
    nf.fit(df=df.iloc[: first_origin + 1])
    t_fit = time.perf_counter() - t0
    t0 = time.perf_counter()
    cv = nf.cross_validation(df=df, n_windows=n_test, step_size=1, refit=False)
    t_cv = time.perf_counter() - t0  # refits (same seed and data) + all test forecasts
    fc = cv.sort_values(["cutoff", "ds"])["NHITS"].to_numpy().reshape(n_test, H)
    # Prediction latency through the user call, for 1 series and for 1,000 series.
    last = df.iloc[-L:]
    one = timed(lambda: nf.predict(df=last), 20)
    rng = np.random.default_rng(0)
    many_df = pd.concat(
        [
            last.assign(
                unique_id=f"s{i}", y=last["y"].to_numpy() * (1 + 0.01 * rng.standard_normal(L))
            )
            for i in range(1000)
        ]
    )
    many = timed(lambda: nf.predict(df=many_df), 5, warmup=1)
    net = nf.models[0].eval()

    def bare(b: int) -> dict[str, float]:
        batch = {
            "insample_y": torch.randn(b, L, 1), "insample_mask": torch.ones(b, L),
            "futr_exog": torch.empty(b, L + H, 0), "hist_exog": None, "stat_exog": None,
        }  # fmt: skip
        with torch.inference_mode():
            return timed(lambda: net(batch), 50 if b == 1 else 10)

    try:
        bare_times = {"1": bare(1), "1000": bare(1000)}
    except Exception as exc:  # the windows_batch layout is internal to NeuralForecast
        bare_times = {"error": repr(exc)[:200]}
    np.save(out, fc)
    print(
        json.dumps(
            {
                "import_s": t_import,
                "fit_s": t_fit,
                "fit_and_cv_s": t_cv,
                "predict_1": one,
                "predict_1000": many,
                "bare": bare_times,
            }
        )
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--nf-python", help="python of a virtualenv with neuralforecast")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--test-bars", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=5, help="interleaved timing rounds")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--series", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker == "nf":
        worker_nf(np.load(args.series), args.test_bars - H + 1, args.steps, Path(args.out))
        return

    import dataclasses

    import torch

    import celeris.data as cd
    from celeris.models.catalogue import build_model
    from celeris.models.checkpoint import save_checkpoint
    from celeris.models.data import WindowScaler, make_windows
    from celeris.models.export import export_checkpoint
    from celeris.models.predictor import Predictor
    from celeris.models.train import TrainConfig, train

    series = cd.load("sample:sp500")["close"].to_numpy()
    n = len(series)
    n_test = args.test_bars - H + 1
    first_origin = n - H - n_test  # the last bar the models may train on; forecasts start after it
    windows = make_windows(series, L, H)
    train_idx = np.flatnonzero(windows.end + H <= first_origin)
    test_idx = np.flatnonzero(windows.end >= first_origin)
    assert len(test_idx) == n_test, (len(test_idx), n_test)
    tr, te = windows.subset(train_idx), windows.subset(test_idx)

    with tempfile.TemporaryDirectory() as tmp:
        nf = None
        if args.nf_python:
            s_path, f_path = Path(tmp, "series.npy"), Path(tmp, "nf.npy")
            np.save(s_path, series)
            proc = subprocess.run(
                [args.nf_python, __file__, "--worker", "nf", "--series", str(s_path), "--out", str(f_path),
                 "--steps", str(args.steps), "--test-bars", str(args.test_bars)],
                capture_output=True, text=True, check=False,
            )  # fmt: skip
            if proc.returncode != 0:
                raise SystemExit(f"NeuralForecast worker failed:\n{proc.stderr[-3000:]}")
            nf = json.loads(proc.stdout.strip().splitlines()[-1])
            nf_fc = np.load(f_path)

        t0 = time.perf_counter()
        import celeris.models  # noqa: F401

        torch.manual_seed(SEED)
        model = build_model("nhits", input_size=L, horizon=H)
        config = TrainConfig(
            max_steps=args.steps, batch_size=BATCH, lr=LR, scheduler="step", patience=None, precision="fp32",
            seed=SEED, progress=False, loss="mae",
        )  # fmt: skip
        scaler = WindowScaler("robust")
        t0 = time.perf_counter()
        result = train(model, tr, None, config, scaler=scaler)
        t_fit = time.perf_counter() - t0
        ckpt = Path(tmp, "celeris_nhits")
        save_checkpoint(
            model, ckpt, scaler=scaler, meta={"input_size": L, "horizon": H, "n_features": 1}
        )
        # what `celeris train` writes: the exports, verified on the held-out windows
        export_checkpoint(ckpt, "onnx", int8=True, histories=te.x, decline_int8=True)
        pred = Predictor.load(ckpt, backend="torch")
        t0 = time.perf_counter()
        ours = pred.predict(te.x)
        t_pred_all = time.perf_counter() - t0

        y = np.asarray(te.y, dtype=np.float64)
        last = np.asarray(te.x[:, -1, 0], dtype=np.float64)[:, None]
        first = np.asarray(te.x[:, 0, 0], dtype=np.float64)[:, None]
        steps = np.arange(1, H + 1)[None, :]
        forecasts = {
            "celeris NHITS": ours,
            "naive (last value)": np.repeat(last, H, axis=1),
            "drift": last + steps * (last - first) / (L - 1),
        }
        if nf is not None:
            forecasts["NeuralForecast NHITS"] = nf_fc
        print(f"S&P 500 daily closes, {n} bars; horizon {H}, input {L}; {len(tr)} training windows, "
              f"{n_test} rolling test origins; {args.steps} steps x {BATCH} windows, robust window scaling")  # fmt: skip
        print(f"{'forecaster':<24}{'MAE':>10}{'RMSE':>10}{'vs naive':>10}")
        naive_mae = float(np.mean(np.abs(forecasts["naive (last value)"] - y)))
        maes = {}
        for name, f in forecasts.items():
            mae = float(np.mean(np.abs(f - y)))
            rmse = float(np.sqrt(np.mean((f - y) ** 2)))
            maes[name] = mae
            print(f"{name:<24}{mae:>10.3f}{rmse:>10.3f}{mae / naive_mae - 1:>+10.1%}")
        if nf is not None:
            print(
                f"Celeris MAE / NeuralForecast MAE: {maes['celeris NHITS'] / maes['NeuralForecast NHITS']:.3f}"
            )

        print(f"\ntraining {args.steps} steps: celeris {t_fit:.1f} s ({1e3 * t_fit / args.steps:.0f} ms/step)"
              + (f"; NeuralForecast {nf['fit_s']:.1f} s ({1e3 * nf['fit_s'] / args.steps:.0f} ms/step)" if nf else ""))  # fmt: skip
        print(f"celeris forecasts for all {n_test} test windows: {t_pred_all * 1e3:.1f} ms")
        rng = np.random.default_rng(0)
        one = series[-L:].astype(np.float32)
        many = (series[-L:][None, :, None] * (1 + 0.01 * rng.standard_normal((1000, L, 1)))).astype(
            np.float32
        )
        rows = _interleaved(Predictor, ckpt, one, many, args.rounds)
        net = model.eval()
        x1, x1000 = torch.from_numpy(one.reshape(1, L, 1)), torch.from_numpy(many)
        with torch.inference_mode():
            rows.append(
                (
                    "celeris bare forward",
                    timed(lambda: net(x1), 300, 20),
                    timed(lambda: net(x1000), 30, 3),
                )
            )
        if nf is not None:
            rows.append(("nf.predict", nf["predict_1"], nf["predict_1000"]))
            if "1" in nf["bare"]:
                rows.append(("NeuralForecast bare forward", nf["bare"]["1"], nf["bare"]["1000"]))
        print(
            f"\n{'prediction latency':<32}{'1 series p50/p95 (ms)':>24}{'1,000 series p50/p95 (ms)':>28}"
        )
        for name, a, b in rows:
            print(
                f"{name:<32}{a['p50_ms']:>11.3f} /{a['p95_ms']:>9.3f}{b['p50_ms']:>14.2f} /{b['p95_ms']:>10.2f}"
            )
        if nf is not None:
            ratio = nf["predict_1"]["p50_ms"] / rows[0][1]["p50_ms"]
            print(f"\nsingle-series predict, nf.predict / celeris (default): {ratio:.0f}x; "
                  f"import neuralforecast {nf['import_s']:.1f} s")  # fmt: skip
        del dataclasses, result


def _interleaved(
    predictor: type, ckpt: Path, one: np.ndarray, many: np.ndarray, rounds: int
) -> list[tuple[str, dict[str, float], dict[str, float]]]:
    """Time every backend and the default in ``rounds`` shuffled rounds; per backend, the
    median over rounds of each round's p50/p95 (1 series: 200 calls, 1,000 series: 15)."""
    loaded = {"default": predictor.load(ckpt)}
    print(f"default backend: {loaded['default'].describe()}")
    for backend in ("torch", "onnx", "onnx-int8"):
        loaded[backend] = predictor.load(ckpt, backend=backend)
    per_round: dict[str, list[tuple[dict[str, float], dict[str, float]]]] = {k: [] for k in loaded}
    names = list(loaded)
    for _ in range(rounds):
        random.shuffle(names)
        for name in names:
            p = loaded[name]
            per_round[name].append(
                (
                    timed(lambda p=p: p.predict(one), 200, 20),
                    timed(lambda p=p: p.predict(many), 15, 2),
                )
            )
    rows = []
    for name, results in per_round.items():
        label = (
            f"celeris Predictor ({name}{', ' + loaded[name].backend if name == 'default' else ''})"
        )
        rows.append((label, *(_median(r[k] for r in results) for k in (0, 1))))
        spread = [r[1]["p50_ms"] for r in results]
        print(f"{label}: 1,000-series p50 per round {min(spread):.1f}-{max(spread):.1f} ms")
    return rows


def _median(results: object) -> dict[str, float]:
    results = list(results)  # type: ignore[call-overload]
    return {k: statistics.median(r[k] for r in results) for k in ("p50_ms", "p95_ms")}


if __name__ == "__main__":
    main()
