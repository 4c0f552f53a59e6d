"""What every section of the job schema shares: forbid unknown keys, freeze after validation; the size type."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, WithJsonSchema


class Section(BaseModel):
    """A section of the job YAML: unknown keys are errors (a typo never becomes a silent default)."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def _square(value: Any) -> Any:
    if isinstance(value, int) and not isinstance(value, bool):
        return value, value
    if isinstance(value, (list, tuple)) and len(value) == 2:
        return value
    raise ValueError(f"must be one number or [height, width] (got {value!r})")


# `image_size: 28` means 28x28; editors learn from the JSON Schema that both spellings are valid.
Size = Annotated[tuple[int, int], BeforeValidator(_square), WithJsonSchema({"anyOf": [
    {"type": "integer", "minimum": 1},
    {"type": "array", "items": {"type": "integer", "minimum": 1}, "minItems": 2, "maxItems": 2}]})]
