"""Calling a part's constructor with options from a config dict, with errors that name the bad key."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from typing import Any


def call_with_options(factory: Callable[..., Any], options: Mapping[str, Any], what: str, **fixed: Any) -> Any:
    """``factory(**fixed, **options)``, refusing option names the factory does not take.

    Args:
        factory: a class or function with explicit keyword parameters.
        options: the config's keys for this part.
        what: how the part is named in errors, e.g. ``"aggregator 'gem'"``.
        fixed: arguments the builder supplies itself (sizes taken from the previous part).
    """
    parameters = inspect.signature(factory).parameters
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values())
    valid = sorted(
        name
        for name, p in parameters.items()
        if name not in fixed
        and name != "self"
        and p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    )
    clashing = sorted(key for key in options if key in fixed)
    if clashing:
        raise ValueError(f"{what}: option(s) {clashing} are set by the model builder, not the config")
    unknown = sorted(key for key in options if key not in valid)
    if unknown and not takes_any:
        raise ValueError(f"{what}: unknown option(s) {unknown}; valid: {valid}")
    return factory(**fixed, **options)


def build_named(table: Mapping[str, Callable[..., Any]], spec: Mapping[str, Any], kind: str, **fixed: Any) -> Any:
    """``table[spec["name"]]`` built with the spec's other keys and ``fixed`` (see :func:`call_with_options`).

    ``kind`` names the part in errors, e.g. ``"aggregator"``.
    """
    options = dict(spec)
    name = options.pop("name", None)
    if name not in table:
        raise ValueError(f"unknown {kind} {name!r}; valid: {sorted(table)}")
    return call_with_options(table[name], options, f"{kind} {name!r}", **fixed)
