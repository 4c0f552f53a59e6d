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


# A value of the wrong kind, in words; a union's members each report one of these for the same value.
_SECTION = "a section (key: value pairs)"
_KINDS = {"bool_parsing": "true or false", "bool_type": "true or false", "int_parsing": "an integer",
          "int_type": "an integer", "int_from_float": "an integer", "float_parsing": "a number",
          "float_type": "a number", "string_type": "text", "list_type": "a list", "model_type": _SECTION,
          "model_attributes_type": _SECTION, "dict_type": _SECTION}
_WRONG_VALUE = {*_KINDS, "literal_error", "union_alternatives"}  # errors about a value given, never a missing one


def first_problem(errors: list[dict], raw: dict) -> tuple[dict, int]:
    """The error to show and the number of other problems.

    A union (`true`, `false` or `auto`; a number or a section) reports one error per member: they are one problem,
    shown as the alternatives, and a value shaped like one member (a section) is judged by that member alone.
    """
    paths = [tuple(user_path(error, raw)) for error in errors]
    chosen, path = errors[0], paths[0]
    if chosen["type"] in _WRONG_VALUE:
        deeper = [(e, p) for e, p in zip(errors, paths) if len(p) > len(path) and p[:len(path)] == path]
        same = [e for e, p in zip(errors, paths) if p == path]
        if deeper:
            chosen, path = deeper[0]
        elif len(same) > 1 and all(e["type"] in _WRONG_VALUE for e in same):
            kinds = [_KINDS.get(e["type"]) or str(e["ctx"]["expected"]) for e in same]
            chosen = {**chosen, "type": "union_alternatives", "ctx": {"alternatives": list(dict.fromkeys(kinds))}}
    others = {p for p in paths if p != path and p != path[:len(p)]}
    return chosen, len(others)


def describe(error: dict, root: type[BaseModel], raw: dict, path: str | Path, lines: dict[str, int],
             set_keys: set[str]) -> str:
    """One pydantic error (from `ValidationError.errors()`) as `file:line: dotted.key: problem`."""
    keys = user_path(error, raw)
    if error["type"] == "union_tag_invalid":
        keys.append(str(error.get("ctx", {}).get("discriminator", "type")).strip("'"))
    dotted = ".".join(keys)
    if dotted in set_keys:
        return f"{path}: {dotted} (from --set): {problem(error, root)}"
    return f"{where(path, lines, keys)}: {dotted or '(top level)'}: {problem(error, root)}"


def problem(error: dict, root: type[BaseModel]) -> str:
    """What is wrong, in words: the bound, the allowed values, the type expected, or the key to use instead."""
    kind, ctx, value = error["type"], error.get("ctx", {}), error.get("input")
    shown = repr(value)
    got = f" (got {shown if len(shown) <= 80 else shown[:76] + ' ...'})"
    if kind == "extra_forbidden":
        allowed = allowed_keys(root, tuple(error["loc"][:-1]))
        return "unknown key" + (did_you_mean(str(error["loc"][-1]), allowed) or
                                (f"; allowed: {', '.join(allowed)}" if allowed else ""))
    if kind == "missing":
        return "required key is missing"
    if kind == "union_alternatives":
        return f"must be {', or '.join(ctx['alternatives'])}{got}"
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
        if parts and any(_tagged(cls, parts[0]) for cls in classes):
            tag = parts.pop(0)
            classes = [cls for cls in classes if _tagged(cls, tag)]
        if len(classes) != 1:
            return []
        cls = classes[0]
    return list(cls.model_fields)


def _tagged(cls: type[BaseModel], tag: Any) -> bool:
    """Whether `tag`, a part of an error location, is pydantic's name for `cls` as a member of a union."""
    kind = cls.model_fields.get("type")
    return tag == cls.__name__ or (kind is not None and tag == kind.default)


def _models_in(annotation: Any) -> list[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [cls for arg in get_args(annotation) for cls in _models_in(arg)]


def user_path(error: dict, raw: Any) -> list[str]:
    """The keys the user wrote that lead to `error`, without the union tags pydantic puts into its location
    (`builtin`, `bool`, `literal['auto']`): a part the YAML does not have is a tag, unless the error is about it
    (a missing key, or a rule about a key left at its default)."""
    loc = tuple(error["loc"])
    named_last = error["type"] not in _WRONG_VALUE
    keys: list[str] = []
    node = raw
    for position, part in enumerate(loc):
        present = (isinstance(node, dict) and part in node) or (
            isinstance(node, list) and isinstance(part, int) and part < len(node))
        if not present and not (named_last and position == len(loc) - 1):
            continue
        keys.append(str(part))
        node = node[part] if present else None
    return keys
