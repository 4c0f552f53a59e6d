"""Pydantic's validation errors, rewritten for the user: `file:line: dotted.key: problem`, with a did-you-mean."""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any, get_args

from pydantic import BaseModel


def did_you_mean(word: str, choices: list[str]) -> str:
    """`; did you mean 'x'?` for the closest choice, or nothing."""
    close = difflib.get_close_matches(word, choices, n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""


def where(path: str | Path, lines: dict[str, int], keys: list[str]) -> str:
    """`path:line` of the deepest of `keys`' prefixes that the YAML has a line for, or just `path`."""
    line = next((lines[".".join(keys[:n])] for n in range(len(keys), 0, -1) if ".".join(keys[:n]) in lines), None)
    return f"{path}:{line}" if line else str(path)


def describe(error: dict, root: type[BaseModel], raw: dict, path: str | Path, lines: dict[str, int],
             set_keys: set[str]) -> str:
    """One pydantic error (from `ValidationError.errors()`) as `file:line: dotted.key: problem`."""
    keys = _user_path(tuple(error["loc"]), raw)
    if error["type"] == "union_tag_invalid":
        keys.append(str(error.get("ctx", {}).get("discriminator", "type")).strip("'"))
    dotted = ".".join(keys)
    if dotted in set_keys:
        return f"{path}: {dotted} (from --set): {problem(error, root)}"
    return f"{where(path, lines, keys)}: {dotted or '(top level)'}: {problem(error, root)}"


def problem(error: dict, root: type[BaseModel]) -> str:
    """What is wrong, in words: the bound, the allowed values, the type expected, or the key to use instead."""
    kind, ctx, value = error["type"], error.get("ctx", {}), error.get("input")
    got = f" (got {value!r})"
    if kind == "extra_forbidden":
        allowed = allowed_keys(root, tuple(error["loc"][:-1]))
        return "unknown key" + (did_you_mean(str(error["loc"][-1]), allowed) or
                                (f"; allowed: {', '.join(allowed)}" if allowed else ""))
    if kind == "missing":
        return "required key is missing"
    bounds = {"greater_than": ">", "greater_than_equal": ">=", "less_than": "<", "less_than_equal": "<="}
    if kind in bounds:
        bound = next(iter(ctx.values()))
        return f"must be {bounds[kind]} {bound:g}{got}"
    if kind == "literal_error":
        return f"must be one of {ctx['expected']}{got}"
    if kind == "union_tag_invalid":
        return f"unknown type {ctx.get('tag')!r}; expected one of {ctx.get('expected_tags')}"
    if kind == "union_tag_not_found":
        return f"needs a `{ctx.get('discriminator', 'type').strip(chr(39))}` key"
    if kind in ("int_parsing", "int_type", "int_from_float"):
        return f"must be an integer{got}"
    if kind in ("float_parsing", "float_type"):
        return f"must be a number{got}"
    if kind in ("bool_parsing", "bool_type"):
        return f"must be true or false{got}"
    if kind in ("model_type", "model_attributes_type", "dict_type"):
        return f"must be a section (key: value pairs){got}"
    if kind == "string_pattern_mismatch":
        return f"must match {ctx.get('pattern')}{got}"
    if kind == "value_error":
        return str(ctx.get("error", error["msg"]))
    message = error["msg"]
    return message[0].lower() + message[1:] + got


def allowed_keys(root: type[BaseModel], loc: tuple) -> list[str]:
    """The field names of the section at a pydantic error location (following union tags)."""
    cls = root
    parts = list(loc)
    while parts:
        field = cls.model_fields.get(str(parts.pop(0)))
        if field is None:
            return []
        classes = _models_in(field.annotation)
        if len(classes) > 1 and parts:
            tag = parts.pop(0)
            classes = [c for c in classes if c.model_fields.get("type") and c.model_fields["type"].default == tag]
        if len(classes) != 1:
            return []
        cls = classes[0]
    return list(cls.model_fields)


def _models_in(annotation: Any) -> list[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [cls for arg in get_args(annotation) for cls in _models_in(arg)]


def _user_path(loc: tuple, raw: Any) -> list[str]:
    """Drop the union tags pydantic puts into error locations, keeping the keys the user wrote."""
    keys: list[str] = []
    node = raw
    for position, part in enumerate(loc):
        last = position == len(loc) - 1
        if isinstance(node, dict) and part not in node and not last:
            continue  # a discriminator tag such as 'builtin'
        keys.append(str(part))
        node = node.get(part) if isinstance(node, dict) else (
            node[part] if isinstance(node, list) and isinstance(part, int) and part < len(node) else None)
    return keys
