"""Validation shared by the train config and the study spec: constrained value types, and the
one formatter that turns a pydantic error into the project's one-line message (the key path,
what was expected, what was given, and the closest valid key for a misspelling)."""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Annotated, Any

from pydantic import BaseModel, Field

PositiveInt = Annotated[int, Field(gt=0)]
NonNegativeInt = Annotated[int, Field(ge=0)]
PositiveFloat = Annotated[float, Field(gt=0)]
NonNegativeFloat = Annotated[float, Field(ge=0)]
Fraction = Annotated[float, Field(ge=0, le=1)]
Seed = Annotated[int, Field(ge=0, lt=2**32)]  # numpy's SeedSequence and torch both take these

CONSTRAINTS = {
    "greater_than": ("gt", ">"),
    "greater_than_equal": ("ge", ">="),
    "less_than": ("lt", "<"),
    "less_than_equal": ("le", "<="),
}


class KeyProblem(ValueError):
    """Raised in a model validator to blame one key (pydantic would blame the whole model)."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(message)
        self.key = key
        self.message = message


def closest_key(key: object, choices: Iterable[str]) -> str:
    """A ' (did you mean `x`?)' hint, or ''."""
    if not isinstance(key, str):
        return ""
    match = difflib.get_close_matches(key, list(choices), n=1, cutoff=0.6)
    return f" (did you mean `{match[0]}`?)" if match else ""


def key_name(key: object) -> str:
    """A key as it can be shown on one line: as written when printable and short, else its
    ``repr`` (cut at 60 characters)."""
    text = str(key)
    if text.isprintable() and len(text) <= 60:
        return text
    shown = repr(key)
    return shown if len(shown) <= 60 else f"{shown[:57]}..."


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else f"{text[:77]}..."


def _fields_at(model: type[BaseModel] | None, path: list[str]) -> list[str]:
    """The field names (by alias where one is set) of the model that ``path`` leads into."""
    for part in path:
        if model is None:
            return []
        field = next(
            (f for name, f in model.model_fields.items() if (f.alias or name) == part), None
        )
        annotation = getattr(field, "annotation", None)
        model = (
            annotation
            if isinstance(annotation, type) and issubclass(annotation, BaseModel)
            else None
        )
    if model is None:
        return []
    return [field.alias or name for name, field in model.model_fields.items()]


# pydantic puts the member of a union it tried into the error's location; not a key.
UNION_MEMBER = re.compile(
    r"^(constrained-|function-|literal\[|nullable\[|list\[|dict\[|"
    r"tuple\[|(int|float|str|bool|none)$)"
)


def _wanted(error: Mapping[str, Any]) -> str | None:
    """What the value should have been, e.g. "a number >= 0" (None: no short phrase)."""
    kind, ctx = str(error.get("type", "")), error.get("ctx") or {}
    if kind == "literal_error":
        return f"one of {ctx.get('expected', '')}"
    if kind in CONSTRAINTS:
        name, sign = CONSTRAINTS[kind]
        bound = ctx.get(name)
        if isinstance(bound, float) and bound.is_integer():
            bound = int(bound)
        return "a positive number" if (sign, bound) == (">", 0) else f"a number {sign} {bound}"
    if kind == "finite_number":
        return "a finite number"
    return None


def describe(errors: Sequence[Mapping[str, Any]], model: type[BaseModel]) -> tuple[str, str]:
    """``(key path, message)`` for the first problem of a pydantic ValidationError
    (``exc.errors()``); the alternatives of a union are named together."""
    error = errors[0]
    loc = [str(p) for p in error.get("loc", ()) if not isinstance(p, int)]
    members = [p for p in loc if UNION_MEMBER.match(p)]
    loc = [p for p in loc if not UNION_MEMBER.match(p)]
    shown = [key_name(p) for p in loc]
    kind = str(error.get("type", ""))
    ctx = error.get("ctx") or {}
    given = f", got {_shown(error.get('input'))}"
    if isinstance(ctx.get("error"), KeyProblem):
        problem = ctx["error"]
        return ".".join([*shown, problem.key]), problem.message
    path = ".".join(shown) or "<root>"
    if kind == "extra_forbidden":
        return path, f"unknown key{closest_key(loc[-1], _fields_at(model, loc[:-1]))}"
    if kind == "missing":
        return path, "required key is missing"
    if members:  # a union: every alternative it tried for this key
        same = [e for e in errors if [str(p) for p in e.get("loc", ())][: len(loc)] == loc]
        wanted = [_wanted(e) for e in same]
        if all(wanted):
            return path, f"expected {' or '.join(dict.fromkeys(wanted))}{given}"
    wanted = _wanted(error)
    if wanted is not None:
        return path, f"expected {wanted}{given}"
    message = str(error.get("msg", "invalid value")).removeprefix("Value error, ")
    if kind.endswith("_type") or kind.endswith("_parsing"):
        message = f"{message[0].lower()}{message[1:]}{given}"
    return path, message
