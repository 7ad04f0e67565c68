"""Where configuration is validated: pydantic settings and frozen configs, Celeris errors out.

:func:`load_settings` builds settings from arguments over the environment, with errors that
name the variable to fix (shared by :func:`celeris.llm.settings.load_llm_settings` and
:func:`celeris.serving.config.load_serve_settings`). :class:`FrozenConfig` is the base of the
configurations a caller hands in (the batcher's policy, a load run's bounds, an SLA, the
optimiser's guard, a download's retry policy): frozen, unknown fields refused with a "did you
mean" hint, and pydantic's validation errors turned into :class:`CelerisTypeError` (wrong
type) or :class:`ConfigError` (bad value). Kept out of :mod:`celeris.errors`, which must not
import pydantic.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, ClassVar, Self, TypeVar

from pydantic import (
    BaseModel,
    ConfigDict,
    GetCoreSchemaHandler,
    GetJsonSchemaHandler,
    ValidationError,
    ValidationInfo,
)
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import core_schema

from celeris.checks import check_int, check_real
from celeris.errors import CelerisError, CelerisTypeError, ConfigError, did_you_mean

S = TypeVar("S", bound=BaseModel)


def load_settings(
    cls: type[S], overrides: dict[str, Any], *, label: str, env_var: Callable[[str], str]
) -> S:
    """Build ``cls`` from the ``overrides`` that are not ``None``, over its other sources.

    Parameters
    ----------
    cls
        The settings class (a pydantic ``BaseSettings``).
    overrides
        Keyword arguments; ``None`` ones are dropped, so CLI options left unset fall through
        to the environment and the defaults.
    label
        What the settings are, for messages: ``"LLM"`` gives "unknown LLM setting ...".
    env_var
        The environment variable of a field, named in the message of a bad value.

    Raises
    ------
    ConfigError
        An unknown setting (with a "did you mean" hint) or a bad value, naming its variable.
    """
    given = {k: v for k, v in overrides.items() if v is not None}
    for key in given:
        if key not in cls.model_fields:
            raise ConfigError(
                f"unknown {label} setting {key!r}{did_you_mean(key, cls.model_fields)}"
            )
    try:
        return cls(**given)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "settings"
        field = str(first["loc"][0]) if first["loc"] else where
        msg = str(first["msg"]).removeprefix("Value error, ")
        raise ConfigError(
            f"{label} setting {where}: {msg} (got {first.get('input')!r}; environment "
            f"variable {env_var(field)})"
        ) from None


# --------------------------------------------------------------------- frozen configurations


class _Bounds:
    """The range rule of one numeric field, checked by :mod:`celeris.checks`.

    Used as ``Annotated[int, integer(ge=1)]``: a ``bool`` or any other non-number is a wrong
    *type* (:class:`CelerisTypeError`), a number outside the bounds a bad *value*
    (:class:`ConfigError`); numpy integers and floats are accepted and converted. ``None``
    passes through (to the field's type, which refuses it unless the field is optional).
    The bounds also appear in the model's JSON schema (``minimum``, ``exclusiveMaximum``...).
    """

    __slots__ = ("finite", "high", "integer", "low", "open_high", "open_low")

    def __init__(
        self,
        integer: bool,
        low: float | None,
        high: float | None,
        *,
        open_low: bool = False,
        open_high: bool = False,
        finite: bool = True,
    ) -> None:
        self.integer, self.low, self.high = integer, low, high
        self.open_low, self.open_high, self.finite = open_low, open_high, finite

    def __get_pydantic_core_schema__(
        self, source: Any, handler: GetCoreSchemaHandler
    ) -> core_schema.CoreSchema:
        return core_schema.with_info_before_validator_function(self, handler(source))

    def __get_pydantic_json_schema__(
        self, schema: core_schema.CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        out = handler(schema)
        if self.low is not None:
            out["exclusiveMinimum" if self.open_low else "minimum"] = self.low
        if self.high is not None:
            out["exclusiveMaximum" if self.open_high else "maximum"] = self.high
        return out

    def __call__(self, value: Any, info: ValidationInfo) -> Any:
        if value is None:
            return None
        what = info.field_name or "value"
        if self.integer:
            low, high = self.low, self.high
            return check_int(
                what,
                value,
                minimum=None if low is None else int(low),
                maximum=None if high is None else int(high),
            )
        return check_real(
            what,
            value,
            minimum=_shown(self.low),
            maximum=_shown(self.high),
            open_low=self.open_low,
            open_high=self.open_high,
            finite=self.finite,  # False: an unbounded side admits infinity
        )


def _shown(bound: float | None) -> float | None:
    # 1_000_000.0 reads "1000000" in a message, not "1000000.0"; the comparison is the same.
    return int(bound) if isinstance(bound, float) and bound.is_integer() else bound


def integer(*, ge: int | None = None, le: int | None = None) -> Any:
    """Return the validator of an integer field: ``Annotated[int, integer(ge=1)]``.

    :func:`celeris.checks.check_int`'s rule: a ``bool``, a float (even ``2.0``) or a string is
    a :class:`CelerisTypeError`; an integer (numpy's included) outside ``[ge, le]`` a
    :class:`ConfigError` naming the range.
    """
    return _Bounds(True, ge, le)


def number(
    *,
    gt: float | None = None,
    ge: float | None = None,
    lt: float | None = None,
    le: float | None = None,
    finite: bool = True,
) -> Any:
    """Return the validator of a real field: ``Annotated[float, number(gt=0)]``.

    :func:`celeris.checks.check_real`'s rule: ints and numpy numbers are accepted and stored as
    ``float``; a ``bool`` or a string is a :class:`CelerisTypeError`; NaN, infinity or a number
    outside the bounds a :class:`ConfigError` naming the range. ``finite=False`` admits
    infinity on a side that has no bound (``number(gt=0, finite=False)``: ``(0, inf]``).
    """
    if (gt is not None and ge is not None) or (lt is not None and le is not None):
        raise ConfigError("give one lower bound (gt or ge) and one upper bound (lt or le)")
    return _Bounds(
        False,
        gt if gt is not None else ge,
        lt if lt is not None else le,
        open_low=gt is not None,
        open_high=lt is not None,
        finite=finite,
    )


class FrozenConfig(BaseModel):
    """Base of the configurations a user, the CLI or an API hands in: frozen, strict, exact.

    * Unknown fields are refused with a hint: ``BatcherConfig(max_batch=8)`` raises
      ``ConfigError("unknown batcher setting 'max_batch' (did you mean 'max_batch_size'?)")``.
    * A wrong type (a ``bool`` for an int, a float for an int, a string for a number) raises
      :class:`CelerisTypeError`; a value of the right type outside its range raises
      :class:`ConfigError`, by :mod:`celeris.checks`'s rule (numeric fields are checked by it:
      :func:`integer`, :func:`number`). Either message names the field, the value and what is
      allowed. Validators may raise a Celeris error themselves; it reaches the caller as is.
    * Instances are frozen (assignment raises ``dataclasses.FrozenInstanceError``, as a frozen
      dataclass does), hashable, equal when their fields are equal, and picklable; change one
      with ``model_copy(update=...)``, read all with ``model_dump()``.
    * Fields are keyword-only unless the subclass says ``class C(FrozenConfig, kw_only=False)``,
      which also accepts positional arguments in field order (and tells type checkers so).

    Subclasses set ``config_label`` ("batcher", "load"...), the word the messages use.
    """

    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)

    config_label: ClassVar[str] = "config"
    _positional: ClassVar[bool] = False

    if not TYPE_CHECKING:  # type checkers read ``kw_only`` through pydantic's dataclass_transform

        def __init_subclass__(cls, *, kw_only: bool = True, **kwargs: Any) -> None:
            super().__init_subclass__(**kwargs)
            cls._positional = not kw_only

    def __init__(self, /, *args: Any, **kwargs: Any) -> None:
        cls = type(self)
        fields = cls.model_fields
        if args:
            names = list(fields)
            if not cls._positional or len(args) > len(names):
                most = len(names) if cls._positional else 0
                raise CelerisTypeError(
                    f"{cls.__name__} takes {most} positional arguments, got {len(args)}; "
                    "name the settings"
                )
            for name, value in zip(names, args, strict=False):
                if name in kwargs:
                    raise CelerisTypeError(f"{cls.__name__} got two values for {name!r}")
                kwargs[name] = value
        for key in kwargs:
            if key not in fields:
                raise ConfigError(
                    f"unknown {cls.config_label} setting {key!r}{did_you_mean(key, fields)}"
                )
        try:
            super().__init__(**kwargs)
        except ValidationError as exc:
            raise config_error(exc, cls.config_label) from None

    def model_copy(self, *, update: Mapping[str, Any] | None = None, deep: bool = False) -> Self:
        """Return a copy with ``update`` applied, checked like a new configuration.

        pydantic's own ``model_copy`` skips validation (an unknown key or a bad value would go
        through); this one builds the copy through ``__init__`` (and the class's validators),
        then carries private state over as it is (a target's request counter stays shared).
        """
        if not update:
            return super().model_copy(deep=deep)
        values = {name: getattr(self, name) for name in type(self).model_fields}
        if deep:
            values = copy.deepcopy(values)
        new = type(self)(**{**values, **update})
        private = getattr(self, "__pydantic_private__", None)
        if private:
            object.__setattr__(new, "__pydantic_private__", dict(private))
        return new

    def __setattr__(self, name: str, value: Any) -> None:
        if name in type(self).__private_attributes__:
            super().__setattr__(name, value)
            return
        raise dataclasses.FrozenInstanceError(
            f"cannot assign to {name!r}: a {self.config_label} configuration is frozen; "
            "use model_copy(update={...})"
        )

    def __delattr__(self, name: str) -> None:
        raise dataclasses.FrozenInstanceError(
            f"cannot delete {name!r}: a {self.config_label} configuration is frozen"
        )

    def _values(self) -> tuple[Any, ...]:
        return tuple(getattr(self, name) for name in type(self).model_fields)

    def __eq__(self, other: object) -> bool:
        # Fields only, like a dataclass: private state (a run counter) does not make two
        # configurations differ.
        if type(other) is not type(self):
            return NotImplemented
        assert isinstance(other, FrozenConfig)
        return self._values() == other._values()

    def __hash__(self) -> int:
        return hash((type(self), self._values()))

    def __str__(self) -> str:
        # As a dataclass prints (pydantic's str drops the class name): reports print these.
        return repr(self)


# pydantic error types that mean "the wrong kind of thing", not "a bad value of the right kind"
_TYPE_ERRORS = frozenset(
    {
        "missing",
        "is_instance_of",
        "is_subclass_of",
        "int_from_float",
        "int_parsing",
        "float_parsing",
        "bool_parsing",
        "bytes_invalid_encoding",
    }
)


def config_error(exc: ValidationError, label: str) -> CelerisError:
    """Turn pydantic's first validation error into the Celeris error a caller should see.

    A Celeris error raised by a validator (the :mod:`celeris.checks` functions behind
    :func:`integer` and :func:`number` included) comes back as it was; an unknown field is a
    :class:`ConfigError`; a wrong type a :class:`CelerisTypeError`; anything else a
    :class:`ConfigError`. Messages read ``"<field> must be <what is allowed>, got <value>"``.
    """
    first = exc.errors(include_url=False)[0]
    kind = str(first["type"])
    ctx = first.get("ctx") or {}
    inner = ctx.get("error")
    if isinstance(inner, CelerisError):
        return inner
    loc = first["loc"]
    where = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in loc).lstrip(".")
    where = where or "settings"
    value = first.get("input")
    if kind == "extra_forbidden":
        return ConfigError(f"unknown {label} setting {where!r}")
    if kind == "missing":
        return CelerisTypeError(f"{label} setting {where} is required")
    msg = str(first["msg"])
    if kind == "value_error":
        return ConfigError(f"{where}: {msg.removeprefix('Value error, ')}, got {value!r}")
    expected = msg.removeprefix("Input should be ")
    if kind in _TYPE_ERRORS or kind.endswith("_type"):
        return CelerisTypeError(f"{where} must be {expected}, got {type(value).__name__} {value!r}")
    return ConfigError(f"{where} must be {expected}, got {value!r}")
