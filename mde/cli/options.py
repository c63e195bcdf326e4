"""Parsers for option values that typer cannot type on its own."""

from __future__ import annotations

from typing import Optional, TypeVar

from mde.errors import MdeError

Number = TypeVar("Number", int, float)


def number_or(text: str, keyword: str, option: str, kind: type[Number]) -> Optional[Number]:
    """``text`` as a ``kind`` (int or float), or None when it is ``keyword`` ('auto', 'all').

    ``option`` names the option in the one-line error for anything else. Range checks (positive,
    finite) are the callee's, which knows what the number means.
    """
    if text == keyword:
        return None
    try:
        return kind(text)
    except ValueError:
        what = "a whole number" if kind is int else "a number"
        raise MdeError(f"{option} must be {what} or '{keyword}', got {text!r}") from None
