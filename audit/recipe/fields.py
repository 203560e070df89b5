"""A small declarative schema for recipe sections.

Each section lists its fields with a type description, a default, a parser and a doc line. The same
declarations validate recipes (one-line errors that name the file, the key and what was expected) and
generate the recipe reference (docs/recipe.md), so the two cannot drift apart.
"""

from __future__ import annotations

import difflib
import math
import re
from dataclasses import dataclass
from fractions import Fraction
from typing import Any, Callable

REQUIRED: Any = object()  # sentinel: the key must be given


class FieldError(ValueError):
    """Raised by parsers; the message says what was expected."""


Parser = Callable[[Any], Any]


@dataclass(frozen=True)
class Field:
    name: str
    type: str  # what is expected, in words: shown in errors and docs
    doc: str
    default: Any = None  # None: optional without a default; REQUIRED: must be given
    parse: Parser | None = None
    example: str | None = None  # a TOML value for the docs
    # A nested table validated as another section (e.g. [harden.data] with the keys of [data]); messages
    # then name it as [outer.name].
    subsection: "Section | None" = None

    @property
    def required(self) -> bool:
        return self.default is REQUIRED


@dataclass(frozen=True)
class Section:
    name: str
    doc: str
    fields: tuple[Field, ...]
    array: bool = False  # an array of tables ([[gates]])
    example: str = ""  # a TOML snippet for the docs
    # Cross-field checks: gets the validated dict and a prefix for messages, raises FieldError.
    post: Callable[[dict[str, Any]], None] | None = None
    required: bool = False

    def field_names(self) -> list[str]:
        return [f.name for f in self.fields]

    def defaults(self) -> dict[str, Any]:
        return {f.name: f.default for f in self.fields if not f.required}


def suggest(name: str, options: list[str]) -> str:
    close = difflib.get_close_matches(name, options, n=1, cutoff=0.6)
    hint = f"did you mean {close[0]!r}? " if close else ""
    return f"({hint}allowed: {', '.join(options)})"


def validate_table(section: Section, raw: Any, where: str) -> dict[str, Any]:
    """Validate one table of ``section``. ``where`` is e.g. ``"recipes/x.toml: [model]"``.

    Raises FieldError with a complete one-line message.
    """
    if not isinstance(raw, dict):
        raise FieldError(f"{where} must be a table, got {type(raw).__name__}")
    out: dict[str, Any] = {}
    names = section.field_names()
    for key in raw:
        if key not in names:
            raise FieldError(f"{where} unknown key {key!r} {suggest(key, names)}")
    for f in section.fields:
        if f.name not in raw:
            if f.required:
                raise FieldError(f"{where} missing required key {f.name!r}: expected {f.type}")
            out[f.name] = f.default
            continue
        value = raw[f.name]
        if f.subsection is not None:
            inner = where[:-1] + f".{f.name}]" if where.endswith("]") else f"{where} {f.name}"
            out[f.name] = validate_table(f.subsection, value, inner)
            continue
        if f.parse is not None:
            try:
                value = f.parse(value)
            except FieldError as e:
                raise FieldError(f"{where} {f.name} = {_show(raw[f.name])}: {e}") from None
        out[f.name] = value
    if section.post is not None:
        try:
            section.post(out)
        except FieldError as e:
            raise FieldError(f"{where} {e}") from None
    return out


def _show(v: Any) -> str:
    s = repr(v)
    return s if len(s) <= 60 else s[:57] + "..."


# --------------------------------------------------------------------------------------------- parsers


def p_bool(v: Any) -> bool:
    if not isinstance(v, bool):
        raise FieldError("expected true or false")
    return v


def p_int(lo: int | None = None, hi: int | None = None) -> Parser:
    def parse(v: Any) -> int:
        if isinstance(v, bool) or not isinstance(v, int):
            raise FieldError(f"expected an integer{_range(lo, hi)}")
        if (lo is not None and v < lo) or (hi is not None and v > hi):
            raise FieldError(f"expected an integer{_range(lo, hi)}")
        return v

    return parse


def p_float(lo: float | None = None, hi: float | None = None, lo_open: bool = False) -> Parser:
    def parse(v: Any) -> float:
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise FieldError(f"expected a finite number{_range(lo, hi, lo_open)}")
        v = float(v)
        if (lo is not None and (v < lo or (lo_open and v == lo))) or (hi is not None and v > hi):
            raise FieldError(f"expected a number{_range(lo, hi, lo_open)}")
        return v

    return parse


_FRACTION = re.compile(r"^\s*([0-9]*\.?[0-9]+)\s*/\s*([0-9]*\.?[0-9]+)\s*$")


def p_number_or_fraction(lo: float = 0.0, lo_open: bool = True) -> Parser:
    """A number, or a string fraction such as "8/255" (common for image epsilons)."""

    base = p_float(lo, None, lo_open)

    def parse(v: Any) -> float:
        if isinstance(v, str):
            m = _FRACTION.match(v)
            if not m:
                try:
                    v = float(Fraction(v.strip()))
                except (ValueError, ZeroDivisionError, OverflowError):
                    raise FieldError('expected a number or a fraction string like "8/255"') from None
            else:
                num, den = float(m.group(1)), float(m.group(2))
                if den == 0:
                    raise FieldError("division by zero")
                v = num / den
        return base(v)

    return parse


def _range(lo: Any, hi: Any, lo_open: bool = False) -> str:
    if lo is not None and hi is not None:
        return f" in {'(' if lo_open else '['}{lo}, {hi}]"
    if lo is not None:
        return f" {'>' if lo_open else '>='} {lo}"
    if hi is not None:
        return f" <= {hi}"
    return ""


def p_str(choices: tuple[str, ...] | None = None, pattern: str | None = None, what: str = "a string") -> Parser:
    rx = re.compile(pattern) if pattern else None

    def parse(v: Any) -> str:
        if not isinstance(v, str):
            raise FieldError(f"expected {what}" if choices is None else f"expected one of {', '.join(map(repr, choices))}")
        if choices is not None and v not in choices:
            raise FieldError(f"expected one of {', '.join(map(repr, choices))}")
        if rx is not None and not rx.match(v):
            raise FieldError(f"expected {what}")
        return v

    return parse


def p_list(item: Parser, what: str, min_len: int = 0, length: int | None = None, unique: bool = False) -> Parser:
    def parse(v: Any) -> list[Any]:
        if not isinstance(v, list):
            raise FieldError(f"expected a list of {what}")
        if length is not None and len(v) != length:
            raise FieldError(f"expected a list of exactly {length} {what}")
        if len(v) < min_len:
            raise FieldError(f"expected a list of at least {min_len} {what}")
        out = []
        for i, x in enumerate(v):
            try:
                out.append(item(x))
            except FieldError as e:
                raise FieldError(f"item {i}: {e}") from None
        if unique and len(set(map(repr, out))) != len(out):
            raise FieldError(f"expected a list of distinct {what}")
        return out

    return parse


def p_table(v: Any) -> dict[str, Any]:
    if not isinstance(v, dict):
        raise FieldError("expected a table (e.g. { key = 1 })")
    return dict(v)


def p_str_or_list(what: str) -> Parser:
    """A string or a list of strings; always returns a list."""
    lst = p_list(p_str(), what, min_len=1)

    def parse(v: Any) -> list[str]:
        return [v] if isinstance(v, str) else lst(v)

    return parse


FACTORY_PATTERN = r"^([A-Za-z_][\w.]*|[^:]+\.py):[A-Za-z_]\w*(\.[A-Za-z_]\w*)*$"
p_factory = p_str(pattern=FACTORY_PATTERN, what='"module:callable" or "path/to/file.py:callable"')


def p_bounds(v: Any) -> list[float] | None:
    """[low, high] with low < high."""
    lst = p_list(p_float(), "numbers", length=2)(v)
    if not lst[0] < lst[1]:
        raise FieldError("expected [low, high] with low < high")
    return lst
