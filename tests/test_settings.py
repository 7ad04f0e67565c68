"""celeris._settings.FrozenConfig: the base of every configuration a caller hands in."""

from __future__ import annotations

import dataclasses
import math
import pickle
from typing import Annotated, ClassVar

import numpy as np
import pytest
from pydantic import PrivateAttr, field_validator

from celeris._settings import FrozenConfig, integer, number
from celeris.errors import CelerisTypeError, ConfigError


class Probe(FrozenConfig, kw_only=False):
    config_label: ClassVar[str] = "probe"

    max_batch_size: Annotated[int, integer(ge=1, le=4096)] = 64
    rate: Annotated[float | None, number(gt=0.0, le=10.0)] = None
    cap: Annotated[float, number(ge=0.0, finite=False)] = math.inf
    name: str = "probe"


class Named(FrozenConfig):
    config_label: ClassVar[str] = "named"

    url: str
    _counter: list[int] = PrivateAttr(default_factory=list)

    @field_validator("url")
    @classmethod
    def _http(cls, url: str) -> str:
        if not url.startswith("http://"):
            raise ConfigError(f"url must start with http://, got {url!r}")
        return url


def test_frozen_config_unknown_field_raises_config_error_with_hint() -> None:
    with pytest.raises(
        ConfigError,
        match=r"^unknown probe setting 'max_batch' \(did you mean 'max_batch_size'\?\)$",
    ):
        Probe(max_batch=8)  # type: ignore[call-arg]
    with pytest.raises(ConfigError, match=r"^unknown probe setting 'zzz'$"):
        Probe(zzz=1)  # type: ignore[call-arg]


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"max_batch_size": True}, CelerisTypeError, "max_batch_size must be an int in"),
        ({"max_batch_size": 2.0}, CelerisTypeError, "got float 2.0"),
        ({"max_batch_size": "8"}, CelerisTypeError, "got str '8'"),
        ({"max_batch_size": 0}, ConfigError, r"max_batch_size must be in \[1, 4096\], got 0"),
        ({"rate": np.bool_(True)}, CelerisTypeError, "rate"),
        ({"rate": 0}, ConfigError, r"rate must be in \(0, 10\], got 0"),
        ({"rate": math.nan}, ConfigError, "rate must be finite"),
        ({"cap": -math.inf}, ConfigError, "cap"),
        ({"name": 5}, CelerisTypeError, "name must be a valid string, got int 5"),
    ],
)
def test_frozen_config_wrong_type_is_type_error_bad_value_is_config_error(
    kwargs: dict, error: type[Exception], match: str
) -> None:
    with pytest.raises(error, match=match):
        Probe(**kwargs)


def test_frozen_config_accepts_numpy_positional_and_unbounded_infinity() -> None:
    p = Probe(np.int64(8), np.float32(2.5))
    assert (p.max_batch_size, p.rate, p.cap) == (8, 2.5, math.inf)
    assert type(p.max_batch_size) is int and type(p.rate) is float
    assert p == Probe(max_batch_size=8, rate=2.5) and hash(p) == hash(Probe(8, 2.5))
    assert str(p) == repr(p) == "Probe(max_batch_size=8, rate=2.5, cap=inf, name='probe')"
    assert pickle.loads(pickle.dumps(p)) == p
    assert p.model_copy(update={"name": "x"}).name == "x" and p.name == "probe"
    with pytest.raises(CelerisTypeError, match="takes 4 positional arguments, got 5"):
        Probe(1, 1.0, 1.0, "a", "b")  # type: ignore[call-arg]
    with pytest.raises(CelerisTypeError, match="two values for 'max_batch_size'"):
        Probe(8, max_batch_size=9)  # type: ignore[misc]


def test_frozen_config_assignment_raises_and_private_state_ignored_by_equality() -> None:
    a, b = Named(url="http://x"), Named(url="http://x")
    a._counter.append(1)
    assert a == b and hash(a) == hash(b)  # private state is not a field
    with pytest.raises(dataclasses.FrozenInstanceError, match="'url'"):
        a.url = "http://y"  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        del a.url


def test_frozen_config_keyword_only_missing_and_validator_errors() -> None:
    with pytest.raises(CelerisTypeError, match="takes 0 positional arguments"):
        Named("http://x")  # type: ignore[misc]
    with pytest.raises(CelerisTypeError, match="named setting url is required"):
        Named()  # type: ignore[call-arg]
    # A Celeris error raised by a validator reaches the caller as it was raised.
    with pytest.raises(ConfigError, match=r"^url must start with http://, got 'ftp://x'$"):
        Named(url="ftp://x")


def test_frozen_config_json_schema_states_the_bounds() -> None:
    props = Probe.model_json_schema()["properties"]
    assert props["max_batch_size"]["minimum"] == 1 and props["max_batch_size"]["maximum"] == 4096
    assert props["rate"]["exclusiveMinimum"] == 0.0 and props["rate"]["maximum"] == 10.0
    assert Probe.model_json_schema()["additionalProperties"] is False


def test_number_two_lower_bounds_refused() -> None:
    with pytest.raises(ConfigError, match="one lower bound"):
        number(gt=0.0, ge=1.0)


def test_frozen_config_model_copy_update_is_checked_like_a_new_config() -> None:
    # pydantic's model_copy skips validation: an unknown key or a bad value went through.
    p = Probe(max_batch_size=8)
    with pytest.raises(ConfigError, match=r"unknown probe setting 'max_batch' \(did you mean"):
        p.model_copy(update={"max_batch": 3})
    with pytest.raises(ConfigError, match=r"max_batch_size must be in \[1, 4096\], got 0"):
        p.model_copy(update={"max_batch_size": 0})
    with pytest.raises(ConfigError, match="url must start with http://"):
        Named(url="http://x").model_copy(update={"url": "ftp://x"})
    a = Named(url="http://x")
    b = a.model_copy(update={"url": "http://y"})
    assert b.url == "http://y" and b._counter is a._counter  # private state carried over
    assert p.model_copy() == p and p.model_copy(update={"rate": 2}).rate == 2.0
