"""Validate the docker-compose files the way `docker compose config` would.

Compose first interpolates `${VAR}`, `${VAR:-default}` and `${VAR:?error}`
from the environment, resolves YAML merge keys, then checks the result
against the Compose Specification. This does the same with a fixed example
environment and the `compose-spec` parser (strict: unknown keys are errors),
plus the cross-references that a schema cannot see (depends_on targets).
No Docker engine is needed. Run by deploy/check.sh in its tools venv:

    python deploy/validate_compose.py deploy/docker-compose.yml [override.yml ...]
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from compose_spec import PyCompose

EXAMPLE_ENV = {"LATTICE_DEV_JWT_SECRET": "example-secret-for-validation"}
_VAR = re.compile(r"\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\}")


def interpolate(value: Any, env: Mapping[str, str]) -> Any:
    """Substitute variables like Compose does; `:?` without a value is an error."""
    if isinstance(value, dict):
        return {k: interpolate(v, env) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, env) for v in value]
    if not isinstance(value, str):
        return value

    def substitute(match: re.Match[str]) -> str:
        name, op, arg = match["name"], match["op"], match["arg"] or ""
        current = env.get(name)
        if op in (":-", "-"):
            return current if current or (op == "-" and current is not None) else arg
        if op in (":?", "?") and not current:
            raise ValueError(f"required variable {name} is missing: {arg}")
        return current or ""

    return _VAR.sub(substitute, value.replace("$$", "\0")).replace("\0", "$")


def check(path: Path, env: Mapping[str, str] = EXAMPLE_ENV) -> list[str]:
    """Errors in one compose file (empty when it is valid)."""
    data = interpolate(yaml.safe_load(path.read_text()), env)
    try:
        PyCompose.from_json(json.dumps(data))
    except ValueError as exc:
        return [str(exc)]
    errors = []
    services = data.get("services", {})
    for name, service in services.items():
        depends = service.get("depends_on", [])
        for target in depends if isinstance(depends, list) else depends.keys():
            if target not in services and path.name == "docker-compose.yml":
                errors.append(f"services.{name}.depends_on: no service {target!r}")
    return errors


def main(argv: list[str]) -> int:
    failed = 0
    for arg in argv:
        for error in check(Path(arg)):
            failed += 1
            print(f"FAIL {arg}: {error}", file=sys.stderr)
    print(f"compose: {len(argv)} files, {failed} errors")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
