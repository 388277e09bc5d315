"""A registry that turns a loss *spec* (plain data) into a loss callable.

The trainer's cache key is a hash over plain data, so a model's loss is described
by a dict such as ``{"name": "ls", "epsilon": 0.1}`` and built here.  Modules
register their losses with :func:`register_loss`.

The loss protocol the trainer relies on:

* ``loss(logits, target) -> scalar tensor`` (``logits`` of shape ``(B, K)``, ``target`` of shape ``(B,)``);
* optionally ``loss.start_epoch(epoch, epochs)``, called before each epoch (0-based), for schedules;
* optionally ``loss.wants_batch = True``: then it is called as ``loss(logits, target, batch)``, where
  ``batch.x`` holds the (augmented) inputs and ``batch.index`` their positions in the training set
  (distillation uses this to look up or compute teacher logits).
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any, Callable, Mapping

__all__ = ["register_loss", "build_loss", "available_losses", "LossContext", "smoothing_spec"]

_LOSSES: dict[str, Callable[..., Callable]] = {}


@dataclass
class LossContext:
    """What a loss factory may need beyond its own hyper-parameters.

    ``train_x``/``train_y``: the training tensors (as the trainer will index them);
    ``device``: where training runs; ``load_model``: a callable taking a run spec and
    returning a trained (cached) ``nn.Module`` — distillation uses it to get its teacher.
    """
    train_x: Any = None
    train_y: Any = None
    device: Any = None
    load_model: Callable[[Any], Any] | None = None


def register_loss(name: str) -> Callable[[Callable[..., Callable]], Callable[..., Callable]]:
    """Decorator: register ``factory(**hyper_parameters[, context]) -> loss callable`` under ``name``."""
    if not isinstance(name, str) or not name:
        raise TypeError(f"loss name must be a non-empty str, got {name!r}")

    def decorate(factory: Callable[..., Callable]) -> Callable[..., Callable]:
        if name in _LOSSES and _LOSSES[name] is not factory:
            raise ValueError(f"a loss named {name!r} is already registered")
        _LOSSES[name] = factory
        return factory

    return decorate


def available_losses() -> list[str]:
    """Names accepted by :func:`build_loss`, sorted."""
    return sorted(_LOSSES)


def build_loss(spec: Mapping[str, Any], context: LossContext | None = None) -> Callable:
    """Build a loss callable from ``{"name": ..., **hyper_parameters}``.

    >>> loss = build_loss({"name": "ls", "epsilon": 0.1})   # doctest: +SKIP
    """
    if not isinstance(spec, Mapping):
        raise TypeError(f"loss spec must be a mapping like {{'name': 'ls', 'epsilon': 0.1}}, got {type(spec).__name__}")
    if "name" not in spec:
        raise ValueError(f"loss spec needs a 'name' key; got keys {sorted(spec)}")
    params = dict(spec)
    name = params.pop("name")
    if name not in _LOSSES:
        raise ValueError(f"unknown loss {name!r}; registered losses are {available_losses()}")
    factory = _LOSSES[name]
    if "context" in inspect.signature(factory).parameters:
        params["context"] = context if context is not None else LossContext()
    try:
        return factory(**params)
    except TypeError as exc:  # unknown hyper-parameter names
        raise TypeError(f"bad hyper-parameters for loss {name!r}: {exc}") from exc


def smoothing_spec(epsilon: float) -> dict[str, Any]:
    """The canonical loss spec for smoothing strength ``epsilon``: ``{"name": "ce"}`` for 0, else ``{"name": "ls", "epsilon": ε}``.

    Every chapter builds its CE/LS specs through this function, so that "ε = 0" and "plain CE" are one cached
    model, not two.

    >>> smoothing_spec(0.0), smoothing_spec(0.1)
    ({'name': 'ce'}, {'name': 'ls', 'epsilon': 0.1})
    """
    from ._validate import check_probability

    epsilon = check_probability("epsilon", epsilon)
    return {"name": "ce"} if epsilon == 0.0 else {"name": "ls", "epsilon": epsilon}
