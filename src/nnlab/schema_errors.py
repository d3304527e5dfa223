"""Pydantic errors as one line each: the dotted key, what is wrong, what is allowed, a close spelling
(the one formatter of validation errors: configs in `nnlab.config`, request bodies in `nnlab.serve`)."""

from __future__ import annotations

import difflib
import typing
from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails


def did_you_mean(word: str, choices: Sequence[str]) -> str:
    """'; did you mean 'x'?' for the closest choice, or '' (the hint every unknown-name error gives)."""
    close = difflib.get_close_matches(word, list(choices), n=1)
    return f"; did you mean {close[0]!r}?" if close else ""


def error_lines(exc: ValidationError, root: type[BaseModel], noun: str = "key",
                skip: Sequence[str] = (), show_input: bool = True) -> list[str]:
    """Every error of `exc` as one line: dotted key, what is wrong and what is allowed (the one
    formatter of pydantic errors: configs here, request bodies in `nnlab.serve`)."""
    lines = []
    for err in exc.errors():
        lines += describe_error(err, root, noun, skip, show_input).split("\n")
    return lines


def describe_error(err: ErrorDetails | dict[str, Any], root: type[BaseModel], noun: str = "key",
                   skip: Sequence[str] = (), show_input: bool = True) -> str:
    """One pydantic error as `key: message (got value)`; loc parts in `skip` (e.g. FastAPI's "body")
    and union tags are left out of the key. A model-level check's message names its keys itself."""
    model, loc = _located(root, [p for p in err.get("loc", ()) if str(p) not in skip
                                 and not str(p).startswith("function-")])
    key = ".".join(map(str, loc)) or "(root)"
    message = str(err.get("msg", "invalid")).removeprefix("Value error, ")
    if err.get("type") == "extra_forbidden" and model is not None:
        allowed = sorted(model.model_fields)
        return f"{key}: unknown {noun}{did_you_mean(str(loc[-1]), allowed)} (allowed: {', '.join(allowed)})"
    if err.get("type") == "value_error" and (not loc or model is not None and str(loc[-1]) not in
                                             model.model_fields):
        return message  # a whole-file or whole-section check
    shown = repr(err.get("input"))
    if not show_input:
        return f"{key}: {message}"
    return f"{key}: {message} (got {shown if len(shown) <= 80 else shown[:77] + '...'})"


def _located(root: type[BaseModel], loc: Sequence[Any]) -> tuple[type[BaseModel] | None, list[Any]]:
    """The model class holding the last part of `loc` (None past a list or dict), and `loc` without
    the tags a discriminated union puts in it (data.folder.path -> data.path)."""
    model: type[BaseModel] | None = root
    key: list[Any] = []
    parts, i = list(loc), 0
    while i < len(parts):
        key.append(parts[i])
        i += 1
        if model is None or i == len(parts):
            continue
        field = model.model_fields.get(str(parts[i - 1]))
        classes = _model_classes(field.annotation) if field is not None else []
        tagged = [c for c in classes if "kind" in c.model_fields and c.model_fields["kind"].default == parts[i]]
        if len(classes) > 1 and tagged:  # a union member: skip its tag
            model, i = tagged[0], i + 1
        else:
            model = classes[0] if len(classes) == 1 else None
    return model, key


def _model_classes(annotation: Any) -> list[type[BaseModel]]:
    """The pydantic models an annotation names (through Optional, unions and Annotated)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [c for arg in typing.get_args(annotation) for c in _model_classes(arg)]
