"""Settings, prompt templates, JSON extraction and the token-budgeted context builder."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydantic import ValidationError

from celeris.backtest.strategies import get_strategy
from celeris.errors import ConfigError, LLMNotConfigured
from celeris.llm.client import LLMClient, describe_error, extract_json
from celeris.llm.context import OMITTED, ContextBuilder, estimate_tokens, token_counter
from celeris.llm.prompts import available_prompts, load_prompt, parse_template
from celeris.llm.schemas import MarketRegime, proposal_schema, schema_instruction, search_space
from celeris.llm.settings import load_llm_settings


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for key in ("BASE_URL", "MODEL", "API_KEY", "RESPONSE_FORMAT", "TIMEOUT"):
        monkeypatch.delenv(f"CELERIS_LLM_{key}", raising=False)
    monkeypatch.setenv("CELERIS_CONFIG", str(tmp_path / "absent.toml"))
    monkeypatch.delenv("CELERIS_PROMPTS_DIR", raising=False)


def test_settings_precedence_arguments_over_env_over_file(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    cfg = tmp_path / "config.toml"
    cfg.write_text('[llm]\nbase_url = "http://file/v1"\nmodel = "from-file"\ntimeout = 5\n')
    monkeypatch.setenv("CELERIS_CONFIG", str(cfg))
    monkeypatch.setenv("CELERIS_LLM_MODEL", "from-env")
    s = load_llm_settings()
    assert (s.base_url, s.model, s.timeout) == ("http://file/v1", "from-env", 5.0)
    assert load_llm_settings(model="from-arg", base_url=None).model == "from-arg"


def test_settings_unknown_file_key_named_with_hint(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    cfg = tmp_path / "config.toml"
    cfg.write_text('[llm]\nbase_ur = "http://x/v1"\n')
    monkeypatch.setenv("CELERIS_CONFIG", str(cfg))
    with pytest.raises(ConfigError, match=r"unknown key llm.base_ur .*base_url"):
        load_llm_settings()


def test_settings_bad_env_value_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CELERIS_LLM_RESPONSE_FORMAT", "grammar")
    with pytest.raises(ConfigError, match="CELERIS_LLM_RESPONSE_FORMAT"):
        load_llm_settings()


def test_client_without_base_url_raises_not_configured_pointing_to_optuna() -> None:
    with pytest.raises(LLMNotConfigured, match=r"CELERIS_LLM_BASE_URL.*Optuna"):
        LLMClient()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('{"a": 1}', {"a": 1}),
        ('Sure! ```json\n{"a": {"b": [1, 2]}}\n``` hope it helps', {"a": {"b": [1, 2]}}),
        ('noise {not json} then {"ok": true}', {"ok": True}),
        ('[1, 2] and {"x": "}"}', {"x": "}"}),
    ],
)
def test_extract_json_finds_first_object(text: str, expected: dict[str, object]) -> None:
    assert extract_json(text) == expected


def test_extract_json_without_object_raises() -> None:
    with pytest.raises(ValueError, match="no valid JSON object"):
        extract_json("I think the market is trending.")
    with pytest.raises(ValueError, match=r"no valid JSON object .*: Expecting"):
        extract_json('{"label": "quiet", "confidence": }')


def test_extract_json_accepts_raw_newline_inside_a_string() -> None:
    # Small models (SmolLM2 via llama.cpp) emit raw control characters inside strings.
    assert extract_json('{"evidence": ["two\nlines"]}') == {"evidence": ["two\nlines"]}


def test_describe_error_names_field_and_value() -> None:
    with pytest.raises(ValidationError) as info:
        MarketRegime.model_validate(
            {
                "label": "sideways",
                "confidence": 1.5,
                "expected_duration_bars": 3,
                "evidence": ["x"],
                "adjustments": [],
            }
        )
    text = describe_error(info.value)
    assert "label:" in text and "confidence: Input should be less than or equal to 1" in text
    assert "(got 1.5)" in text


def test_proposal_schema_enforces_bounds_and_constraint() -> None:
    strat = get_strategy("sma_cross")
    schema = proposal_schema(strat, search_space(strat, {"fast": "5:100", "slow": (20, 400)}))
    js = schema.model_json_schema()
    params = js["$defs"]["SmaCrossParams"]["properties"]
    assert (params["fast"]["minimum"], params["fast"]["maximum"]) == (5, 100)
    ok = {"assessment": "a", "proposals": [{"params": {"fast": 10, "slow": 50}, "reason": "r"}]}
    assert schema.model_validate(ok).proposals[0].params.slow == 50
    for bad, message in [
        ({"fast": 60, "slow": 50}, "constraint fast < slow"),
        ({"fast": 101, "slow": 150}, "less than or equal to 100"),
        ({"fast": 10, "slow": 50, "signal": 3}, "Extra inputs are not permitted"),
    ]:
        doc = {"assessment": "a", "proposals": [{"params": bad, "reason": "r"}]}
        with pytest.raises(ValidationError, match=message):
            schema.model_validate(doc)


@pytest.mark.parametrize(
    ("bounds", "message"),
    [
        ({"fast": "5-100"}, "LOW:HIGH"),
        ({"fast": "50:5"}, "must be below"),
        ({"fst": "5:10"}, "did you mean 'fast'"),
        ({"fast": "0:10"}, "outside"),
    ],
)
def test_search_space_bad_bounds_raise(bounds: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        search_space(get_strategy("sma_cross"), bounds)


def test_shipped_templates_parse_with_name_version_and_both_parts() -> None:
    found = available_prompts()
    assert {"strategy_analysis", "market_regime", "risk_assessment"} <= set(found)
    for name in found:
        t = load_prompt(name)
        assert t.id == f"{name}@v{t.version}" and t.system and t.user
        assert len(t.sha256) == 64 and t.placeholders


def test_template_render_refuses_missing_and_unused_values() -> None:
    t = load_prompt("strategy_analysis")
    values = dict.fromkeys(t.placeholders, "x")
    messages = t.render(**values)
    assert [m["role"] for m in messages] == ["system", "user"]
    values.pop("metrics")
    with pytest.raises(ConfigError, match=r"no value for \$metrics"):
        t.render(**values)
    with pytest.raises(ConfigError, match="no placeholder for bogus"):
        t.render(**dict.fromkeys(t.placeholders, "x"), bogus=1)


def test_user_prompt_dir_overrides_and_versions(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    (tmp_path / "strategy_analysis.v9.md").write_text(
        "---\nname: strategy_analysis\nversion: 9\ndescription: mine\n---\n"
        "[system]\nBe brief.\n[user]\nStrategy $strategy\n"
    )
    monkeypatch.setenv("CELERIS_PROMPTS_DIR", str(tmp_path))
    t = load_prompt("strategy_analysis")
    assert (t.version, t.placeholders) == (9, frozenset({"strategy"}))
    assert load_prompt("strategy_analysis", 1).version == 1
    with pytest.raises(ConfigError, match="no version 3"):
        load_prompt("strategy_analysis", 3)


def test_template_file_name_must_match_front_matter(tmp_path: Path) -> None:
    path = tmp_path / "other.v1.md"
    path.write_text("---\nname: mine\nversion: 1\n---\n[system]\ns\n[user]\nu\n")
    with pytest.raises(ConfigError, match=r"must be mine.v1.md"):
        parse_template(path)


def _builder(budget: int) -> ContextBuilder:
    t = load_prompt("strategy_analysis")
    b = ContextBuilder(t, budget)
    for name in sorted(t.placeholders - {"history", "market_summary", "sensitivity"}):
        b.add(name, name.upper(), required=True)
    b.add("history", lambda level: "h" * (3000, 600, 90)[level], levels=3, priority=1)
    b.add("sensitivity", lambda level: "s" * (1500, 300)[level], levels=2, priority=2)
    b.add("market_summary", lambda level: "m" * (2400, 900, 150)[level], levels=3)
    return b


def test_context_builder_fits_budget_shrinking_lowest_priority_first() -> None:
    full = _builder(100_000).build()
    assert full.dropped == () and set(full.levels.values()) == {0}
    # market_summary (priority 0, 800 tokens) shrinks first: to 300 tokens saves enough.
    ctx = _builder(full.tokens - 300).build()
    assert ctx.tokens <= ctx.budget
    assert ctx.levels == {**full.levels, "market_summary": 1}
    # Market summary at its shortest and then dropped saves ~790; history (priority 1) is next.
    tight = _builder(full.tokens - 1400).build()
    assert tight.tokens <= tight.budget and tight.dropped == ("market_summary",)
    assert tight.levels["history"] == 1 and tight.levels["sensitivity"] == 0
    assert OMITTED in tight.messages[1]["content"]


def test_context_builder_counts_the_schema_instruction() -> None:
    plain = _builder(100_000).build()
    with_schema = _builder(100_000)
    with_schema.schema = MarketRegime
    built = with_schema.build()
    assert built.tokens > plain.tokens + 100
    assert built.messages[0]["content"].endswith(schema_instruction(MarketRegime))


def test_context_builder_raises_when_required_part_cannot_fit() -> None:
    with pytest.raises(ConfigError, match=r"needs \d+ tokens .* budget is 50"):
        _builder(50).build()


def test_token_counter_exact_with_tokenizer_file(tiny_model_dir: Path) -> None:
    count = token_counter(tiny_model_dir)
    text = json.dumps({"fast": 10, "slow": 50, "note": "trend following"})
    assert 0 < count(text) <= len(text)
    assert count(text + text) > count(text)
    assert estimate_tokens("x" * 30) == 15
    with pytest.raises(ConfigError, match=r"no tokenizer.json"):
        token_counter(tiny_model_dir / "missing")
