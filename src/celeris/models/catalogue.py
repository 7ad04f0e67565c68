"""The catalogue of forecasting model classes and the contract every Celeris model keeps.

A model is a :class:`ForecastModel` (a ``torch.nn.Module``) registered under a short name with
:func:`register_model`. Every model:

* takes ``x`` float32 of shape ``[B, L, C]`` in ``forward`` — ``L`` is ``input_size`` and ``C``
  the number of input features (``C = 1`` for a series-only model; the target is channel 0) —
  and returns ``[B, H]`` with ``H = horizon``;
* sets the instance attributes ``input_size``, ``horizon`` and ``n_features`` in its
  constructor, and rejects a batch with the wrong feature count with a :class:`DataError`
  (:meth:`ForecastModel.check_input` does it in one line);
* returns its JSON-serialisable constructor keyword arguments from :meth:`ForecastModel.config`,
  so that ``build_model(model.name, **model.config())`` rebuilds it (this is what checkpoints
  store);
* provides :meth:`ForecastModel.tiny_config`, a small configuration the contract test suite
  (``tests/models/test_contract.py``) builds it with.

Built-in models live in their own modules and register themselves on import;
:func:`build_model` imports them on first use so ``import celeris.models`` stays light.
"""

from __future__ import annotations

import abc
import copy
import importlib
import inspect
from collections.abc import Callable
from typing import Any, ClassVar, TypeVar

import torch

from celeris.errors import ConfigError, DataError, did_you_mean

__all__ = ["MODELS", "ForecastModel", "build_model", "get_model", "register_model"]

MODELS: dict[str, type[ForecastModel]] = {}
"""Registered model classes by name (filled as model modules are imported)."""

# Built-in model modules, imported by build_model/get_model the first time their name is asked
# for; a module that is missing (not written yet, optional dependency) is skipped.
_BUILTIN_MODULES = {
    "nhits": "celeris.models.nhits",
    "cnn_lstm": "celeris.models.cnn_lstm",
    "reservoir": "celeris.models.reservoir",
}


class ForecastModel(torch.nn.Module, abc.ABC):
    """Base class of Celeris forecasting models (see the module docstring for the contract).

    Class attributes
    ----------------
    name : str
        Registry name, set by :func:`register_model`.
    task : str
        ``"regression"`` (forecast values) or ``"classification"`` (direction logits).
    trainable : bool
        False for models fitted in closed form (no parameter takes a gradient step); such a
        model provides ``fit(x, y) -> self`` on windows ``x`` ``[S, L, C]`` and targets
        ``y`` ``[S, H]``, and has no parameter that requires a gradient.
    supports_exog : bool
        False for series-only models that accept ``C = 1`` only.
    """

    name: ClassVar[str] = ""
    task: ClassVar[str] = "regression"
    trainable: ClassVar[bool] = True
    supports_exog: ClassVar[bool] = True

    input_size: int
    horizon: int
    n_features: int

    @abc.abstractmethod
    def config(self) -> dict[str, Any]:
        """Return the constructor keyword arguments (a JSON-serialisable copy)."""

    @classmethod
    @abc.abstractmethod
    def tiny_config(cls, input_size: int, horizon: int, n_features: int) -> dict[str, Any]:
        """Return a small constructor configuration for tests (fast on one CPU core)."""

    def check_input(self, x: torch.Tensor) -> None:
        """Raise :class:`DataError` unless ``x`` is ``[B, input_size, n_features]``."""
        if x.ndim != 3:
            raise DataError(
                f"{self.name}: expected input of shape [batch, {self.input_size}, "
                f"{self.n_features}], got {x.ndim}-D shape {tuple(x.shape)}"
            )
        if x.shape[2] != self.n_features:
            raise DataError(
                f"{self.name}: expected {self.n_features} feature(s) per bar, got {x.shape[2]} "
                f"(input shape {tuple(x.shape)})"
            )
        if x.shape[1] != self.input_size:
            raise DataError(
                f"{self.name}: expected windows of input_size={self.input_size} bars, got "
                f"{x.shape[1]} (input shape {tuple(x.shape)})"
            )


M = TypeVar("M", bound=type[ForecastModel])


def register_model(name: str) -> Callable[[M], M]:
    """Return a class decorator that registers a :class:`ForecastModel` under ``name``.

    The decorator sets ``cls.name = name``. Registering a second, different class under a name
    already taken raises :class:`ConfigError`.
    """

    def decorate(cls: M) -> M:
        if not (isinstance(cls, type) and issubclass(cls, ForecastModel)):
            raise ConfigError(f"register_model({name!r}): {cls!r} is not a ForecastModel subclass")
        known = MODELS.get(name)
        # Re-importing a module (importlib.reload, pytest's importlib mode) registers an equal
        # class again; only a different class under the same name is a conflict.
        if known is not None and known.__qualname__ != cls.__qualname__:
            raise ConfigError(f"model name {name!r} is already registered by {known!r}")
        cls.name = name
        MODELS[name] = cls
        return cls

    return decorate


def _import_builtin(name: str | None = None) -> None:
    names = [name] if name is not None else list(_BUILTIN_MODULES)
    for n in names:
        module = _BUILTIN_MODULES.get(n)
        if module is None or n in MODELS:
            continue
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as exc:
            if exc.name != module:  # the module exists but one of its imports is missing
                raise


def get_model(name: str) -> type[ForecastModel]:
    """Return the model class registered as ``name`` (importing a built-in model on demand)."""
    if name not in MODELS:
        _import_builtin(name)
    if name not in MODELS:
        _import_builtin()
        choices = sorted(MODELS)
        raise ConfigError(
            f"unknown model {name!r}{did_you_mean(str(name), choices)}; "
            f"choose one of {', '.join(map(repr, choices)) or '(none registered)'}"
        )
    return MODELS[name]


def build_model(name: str, **config: Any) -> ForecastModel:
    """Build the model registered as ``name`` with constructor keyword arguments ``config``.

    An unknown model name or keyword raises :class:`ConfigError` with a "did you mean" hint.
    """
    cls = get_model(name)
    params = inspect.signature(cls.__init__).parameters
    if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        names = [p for p in params if p != "self"]
        for key in config:
            if key not in names:
                raise ConfigError(
                    f"{name}: unknown option {key!r}{did_you_mean(key, names)}; "
                    f"options are {', '.join(names)}"
                )
    return cls(**copy.deepcopy(config))
