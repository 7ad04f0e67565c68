"""``celeris optimize`` and ``celeris llm check|prompts|serve|export-dataset|finetune``."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer

from celeris.cli._common import (
    FILLED,
    Options,
    cli_errors,
    console,
    date_range_options,
    load_bars,
    print_json,
)
from celeris.cli.backtest_cmd import RayOpt, TaskSizeOpt, ray_executor
from celeris.cli.options import (
    DataOpt,
    JsonOpt,
    StrategyOpt,
    backtest_options,
    llm_options,
    make_client,
    portfolio_options,
    single_param_values,
)
from celeris.errors import ConfigError

llm_app = typer.Typer(
    help=(
        "Talk to the LLM analyst's model server, serve a local model, and turn audited "
        "optimisation runs into fine-tuning data.\n\n"
        "The server is any OpenAI-compatible API (vLLM, llama.cpp, Ollama): set "
        "CELERIS_LLM_BASE_URL and CELERIS_LLM_MODEL, or [llm] in ~/.config/celeris/config.toml."
    ),
    no_args_is_help=True,
    rich_markup_mode="rich",
)


def default_audit_path(strategy: str) -> Path:
    """``$CELERIS_HOME/runs/optimize-<strategy>-<UTC time>.jsonl``: never the current directory."""
    from celeris.data.store import celeris_home

    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    return celeris_home() / "runs" / f"optimize-{strategy}-{stamp}.jsonl"


def audit_paths(items: list[Path]) -> list[Path]:
    """Expand the audit arguments: a path as it is, a glob pattern (``runs/*.jsonl``, quoted so
    the shell left it) to its matches, sorted; a pattern that matches nothing is an error."""
    import glob

    if not items:
        raise ConfigError("give at least one audit log: --audit runs/a.jsonl or runs/*.jsonl")
    out: list[Path] = []
    for item in items:
        text = str(item)
        if glob.has_magic(text):
            found = sorted(glob.glob(text))
            if not found:
                raise ConfigError(f"--audit {text}: no file matches")
            out.extend(Path(f) for f in found)
        else:
            out.append(item)
    return list(dict.fromkeys(out))


def _bounds(items: list[str]) -> dict[str, str]:
    out = {}
    for item in items:
        name, sep, spec = item.partition("=")
        if not sep:
            raise ConfigError(f"--bound expects NAME=LOW:HIGH, got {item!r}")
        out[name.strip()] = spec.strip()
    return out


# ---- celeris optimize -----------------------------------------------------------------------
@cli_errors
@portfolio_options
@llm_options
@date_range_options
def optimize_cmd(
    data: DataOpt = "sample:sp500",
    strategy: StrategyOpt = "sma_cross",
    bound: Annotated[
        list[str] | None,
        typer.Option(
            "--bound",
            "-b",
            help="NAME=LOW:HIGH search range (repeat). Default: every parameter's declared range.",
        ),
    ] = None,
    param: Annotated[
        list[str] | None,
        typer.Option("--param", "-p", help="Baseline NAME=VALUE (default: the strategy's)."),
    ] = None,
    llm: Annotated[
        bool, typer.Option("--llm", help="Ask the LLM analyst for proposals (else Optuna).")
    ] = False,
    rounds: Annotated[int, typer.Option(help="Proposal rounds.")] = 10,
    per_round: Annotated[int, typer.Option(help="Candidates asked per round.")] = 4,
    objective: Annotated[
        str, typer.Option(help="sharpe | sortino | calmar | cagr | total_return.")
    ] = "sharpe",
    holdout: Annotated[
        float, typer.Option(help="Share of the latest bars kept out of sample.")
    ] = 0.3,
    windows: Annotated[
        int, typer.Option(help="Walk-forward test windows the holdout is cut into.")
    ] = 3,
    dsr: Annotated[
        float, typer.Option(help="Minimum deflated Sharpe ratio for acceptance.")
    ] = 0.95,
    min_trades: Annotated[
        int, typer.Option(help="In-sample trades below which a candidate is not judged.")
    ] = 5,
    audit: Annotated[
        Path | None,
        typer.Option(
            help="Audit log (JSONL, appended). Default: "
            "$CELERIS_HOME/runs/optimize-<strategy>-<time>.jsonl (printed)."
        ),
    ] = None,
    replay: Annotated[
        Path | None,
        typer.Option(help="Re-run a recorded run from its audit log (no LLM, no Optuna)."),
    ] = None,
    seed: Annotated[int, typer.Option(help="Sampler / LLM seed.")] = 0,
    ray: RayOpt = None,
    task_size: TaskSizeOpt = None,
    storage: Annotated[
        str | None,
        typer.Option(
            help="Keep the Optuna study in Optuna's own storage: sqlite:///PATH, the "
            "registry's postgresql://..., or redis://HOST:PORT/DB (a new study each run; the "
            "trials are the same).",
            show_default=False,
        ),
    ] = None,
    llm_opts: Options = FILLED,
    opts: Options = FILLED,
    span: Options = FILLED,
    json_out: JsonOpt = False,
) -> None:
    """Search parameters in sample; accept only what beats the baseline out of sample.

    Every candidate (from Optuna's TPE sampler, or from the LLM analyst with --llm) is
    backtested on the first 70% of the data; one that beats the incumbent there is
    backtested on walk-forward windows of the remaining 30% and accepted only if it beats
    the incumbent there too and its deflated Sharpe ratio, corrected for every trial so
    far, is at least --dsr. Every prompt, answer, backtest and decision goes to the audit log.

    Example: celeris optimize --data sample:sp500 --strategy sma_cross --bound fast=5:100
    --bound slow=20:400 --rounds 10

    With --ray each round's candidates are backtested as tasks on a Ray cluster, with the
    local run's result (worth it when a candidate's backtest is long: docs/ray.md).
    """
    from celeris.backtest.strategies import get_strategy
    from celeris.llm.optimizer import optimize
    from celeris.llm.verify import Guard

    bars = load_bars(data, span)
    strat = get_strategy(strategy)
    opts, device = backtest_options(opts, bars)
    if replay is not None:
        _replay(replay, bars, device, json_out)
        return
    client = make_client(llm_opts) if llm else None
    guard = Guard(holdout=holdout, windows=windows, dsr_threshold=dsr, min_trades=min_trades)
    path = audit if audit is not None else default_audit_path(strat.name)
    result = optimize(
        bars, strat, _bounds(bound or []), method="llm" if llm else "optuna", rounds=rounds,
        per_round=per_round, objective=objective, params=single_param_values(param or [], strat),
        guard=guard, client=client, audit=path, seed=seed, progress=not json_out,
        device=device, executor=ray_executor(ray, task_size), storage=storage, **opts,
    )  # fmt: skip
    if json_out:
        print_json(result.to_dict())
    else:
        console.print(result.summary(), highlight=False, markup=False)


def _replay(log: Path, bars: Any, device: str, json_out: bool) -> None:
    """Re-run a recorded optimisation; exit 1 when a decision differs from the recording."""
    from celeris.llm.optimizer import replay

    result, diffs = replay(log, bars, device=device, progress=not json_out)
    if json_out:
        print_json({**result.to_dict(), "differences": diffs})
        return
    console.print(result.summary(), highlight=False, markup=False)
    console.print(
        "replay reproduces every recorded decision"
        if not diffs
        else "replay differs from the recording:\n  " + "\n  ".join(diffs),
        highlight=False,
        markup=False,
    )
    if diffs:
        raise typer.Exit(1)


# ---- celeris llm check | prompts | serve | export-dataset | finetune --------------------------
@cli_errors
@llm_options
def check_cmd(llm_opts: Options = FILLED) -> None:
    """Reach the configured server, ask one small structured question, report the latency."""
    from celeris.llm.schemas import MarketRegime

    client = make_client(llm_opts)
    answer = client.ask(
        MarketRegime,
        [
            {
                "role": "user",
                "content": "Prices rose 12% in 20 days with falling volatility. Regime?",
            }
        ],
    )
    console.print(
        f"{client.base_url} model {answer.model}: valid answer in {answer.seconds:.2f} s "
        f"({len(answer.attempts)} attempt(s), {answer.usage['completion_tokens']} tokens): "
        f"{answer.value.label} (confidence {answer.value.confidence:.2f})",
        highlight=False,
        markup=False,
    )


@cli_errors
def prompts_cmd(json_out: JsonOpt = False) -> None:
    """List the prompt templates and their versions ($CELERIS_PROMPTS_DIR first)."""
    from celeris.llm.prompts import available_prompts, load_prompt

    found = available_prompts()
    rows = []
    for name, versions in found.items():
        t = load_prompt(name)
        rows.append(
            {
                "name": name,
                "versions": versions,
                "placeholders": sorted(t.placeholders),
                "description": t.description,
                "path": str(t.path),
            }
        )
    if json_out:
        print_json(rows)
        return
    for r in rows:
        console.print(
            f"{r['name']} v{', v'.join(map(str, r['versions']))}: {r['description']}",
            highlight=False,
            markup=False,
        )


@cli_errors
def serve_cmd(
    model: Annotated[
        Path | None,
        typer.Option(help="A local Hugging Face causal-LM directory (config + tokenizer)."),
    ] = None,
    tiny: Annotated[
        Path | None,
        typer.Option(help="Build a tiny random test model into this directory and serve it."),
    ] = None,
    host: Annotated[str, typer.Option(help="Interface to bind (loopback by default).")] = (
        "127.0.0.1"
    ),
    port: Annotated[int, typer.Option(help="Port.")] = 8080,
    threads: Annotated[int, typer.Option(help="Torch threads for generation.")] = 1,
) -> None:
    """Serve a local model over the OpenAI-compatible API, JSON-schema answers constrained.

    For tests and offline work; production models belong on vLLM or llama.cpp.
    Example: celeris llm serve --tiny /tmp/tiny-llm --port 8080
    """
    from celeris.testing.llm_server import OpenAICompatibleServer
    from celeris.testing.tiny_llm import LocalChatModel, build_tiny_model

    if (model is None) == (tiny is None):
        raise ConfigError("give exactly one of --model DIR and --tiny DIR")
    path = build_tiny_model(tiny) if tiny is not None else model
    assert path is not None
    console.print(f"serving {path} at http://{host}:{port}/v1 (Ctrl-C stops)", highlight=False)
    server = OpenAICompatibleServer(
        LocalChatModel(path, threads=threads), host=host, port=port, record_requests=False
    )
    server.serve_forever()


@cli_errors
def export_cmd(
    out: Annotated[Path, typer.Option(help="Output JSONL (chat messages + meta).")],
    files: Annotated[
        list[Path] | None,
        typer.Argument(
            help="Audit logs (what a shell glob such as runs/*.jsonl expands to).",
            show_default=False,
        ),
    ] = None,
    audit: Annotated[
        list[Path] | None,
        typer.Option(
            "--audit",
            "-a",
            help="Audit log(s) of optimize runs (repeat, or a glob such as 'runs/*.jsonl').",
            show_default=False,
        ),
    ] = None,
    include_rejected: Annotated[
        bool,
        typer.Option(help="Also write rounds where nothing was accepted (meta.accepted=0)."),
    ] = False,
) -> None:
    """Write instruction-tuning JSONL: each LLM round's prompt and its verified outcome.

    Example: celeris llm export-dataset --audit runs/*.jsonl --out data.jsonl
    """
    from celeris.llm.dataset import export_dataset

    paths = audit_paths([*(audit or []), *(files or [])])
    n = export_dataset(paths, out, include_rejected=include_rejected)
    console.print(f"wrote {n} examples from {len(paths)} audit log(s) to {out}",
                  highlight=False)  # fmt: skip


@cli_errors
def finetune_cmd(
    model: Annotated[Path, typer.Option(help="Local base model directory.")],
    dataset: Annotated[Path, typer.Option(help="JSONL from `celeris llm export-dataset`.")],
    out: Annotated[Path, typer.Option(help="Where the LoRA adapter is written.")],
    epochs: Annotated[int, typer.Option(help="Passes over the data.")] = 1,
    lr: Annotated[float, typer.Option(help="Learning rate.")] = 2e-4,
    rank: Annotated[int, typer.Option(help="LoRA rank.")] = 8,
    alpha: Annotated[int, typer.Option(help="LoRA alpha.")] = 16,
    max_length: Annotated[int, typer.Option(help="Tokens per example (longer are cut).")] = (2048),
) -> None:
    """LoRA fine-tuning (peft) of a local model on exported examples; meant for a GPU."""
    from celeris.llm.finetune import finetune_lora

    res = finetune_lora(
        model, dataset, out, epochs=epochs, lr=lr, rank=rank, alpha=alpha,
        max_length=max_length,
    )  # fmt: skip
    console.print(
        f"adapter written to {res.out_dir}: {res.steps} steps, loss {res.first_loss:.4f} -> "
        f"{res.last_loss:.4f}, {res.trainable_params:,} of {res.total_params:,} parameters "
        "trained",
        highlight=False,
    )


def register(app: typer.Typer) -> None:
    """Add ``optimize`` and the ``llm`` group to the ``celeris`` app."""
    app.add_typer(llm_app, name="llm")
    app.command("optimize")(optimize_cmd)
    llm_app.command("check")(check_cmd)
    llm_app.command("prompts")(prompts_cmd)
    llm_app.command("serve")(serve_cmd)
    llm_app.command("export-dataset")(export_cmd)
    llm_app.command("finetune")(finetune_cmd)
