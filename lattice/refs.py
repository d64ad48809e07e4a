"""Model references: "name", "name@alias" or "name:version"."""

from __future__ import annotations

import dataclasses
import re

from lattice.errors import InvalidArgument

#: Lower-case DNS label: what model names and aliases look like.
NAME_PATTERN = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")


@dataclasses.dataclass(frozen=True)
class ModelRef:
    """A parsed model reference; at most one of alias and version is set."""

    name: str
    alias: str = ""
    version: int = 0

    @property
    def pinned(self) -> bool:
        """True for "name@alias" and "name:version" (no weighted routing)."""
        return bool(self.alias or self.version)

    def __str__(self) -> str:
        if self.alias:
            return f"{self.name}@{self.alias}"
        if self.version:
            return f"{self.name}:{self.version}"
        return self.name


def parse_model_ref(text: str, field: str = "model") -> ModelRef:
    """Parse a reference, raising InvalidArgument(field) with what is wrong."""
    if not text:
        raise InvalidArgument(field, "required: 'name', 'name@alias' or 'name:version'")
    if len(text) > 200:
        raise InvalidArgument(field, "longer than 200 characters")
    name, alias, version = text, "", 0
    if "@" in text:
        name, _, alias = text.partition("@")
        if not NAME_PATTERN.match(alias) or alias.isdigit():
            raise InvalidArgument(field, f"alias {alias!r} is not a lower-case DNS label")
    elif ":" in text:
        name, _, raw = text.partition(":")
        if not raw.isdigit() or int(raw) < 1:
            raise InvalidArgument(field, f"version {raw!r} is not a positive integer")
        version = int(raw)
    if not NAME_PATTERN.match(name):
        raise InvalidArgument(
            field, f"model name {name!r} is not a lower-case DNS label ([a-z0-9-], max 63)"
        )
    return ModelRef(name, alias, version)
