"""Lint and render the Helm chart, and check that its image overrides take effect.

`helm` itself is not on the package registries this project installs from;
`helm-python-sdk` (PyPI) binds Helm's own Go SDK (v4), so lint and render
here are Helm's, not a re-implementation. Rendered manifests are written to
OUT for deploy/check.sh to validate (kubernetes-validate, checkov) like the
kustomize overlays.

    python deploy/check_helm.py OUT
"""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Any

import helm_python
import yaml

CHART = Path(__file__).resolve().parent / "helm" / "lattice"
KUBE_VERSION = "v1.30.0"
NAMESPACE = "lattice"


def values_files() -> dict[str, dict[str, Any]]:
    """The chart's own defaults, then every ci/*.yaml (Helm's chart-testing layout)."""
    found: dict[str, dict[str, Any]] = {"default": {}}
    for path in sorted((CHART / "ci").glob("*-values.yaml")):
        found[path.stem.removesuffix("-values")] = yaml.safe_load(path.read_text()) or {}
    return found


def lint(name: str, values: dict[str, Any]) -> list[str]:
    report = helm_python.lint(CHART, values, strict=True, kube_version=KUBE_VERSION)
    problems = [
        f"{name}: {m['path']}: {m['error']}"
        for m in report.get("messages", [])
        if m.get("severity", 0) >= 2
    ]
    return problems + [f"{name}: {e}" for e in report.get("errors", [])]


def render(values: dict[str, Any]) -> str:
    chart = helm_python.Chart.load(CHART)
    manifests = chart.render(values, name="lattice", namespace=NAMESPACE, is_install=True)
    return "".join(
        f"---\n# Source: {path}\n{body.strip()}\n"
        for path, body in sorted(manifests.items())
        if path.endswith(".yaml") and body.strip() and "kind:" in body
    )


def images(rendered: str) -> set[str]:
    return set(re.findall(r"^\s+(?:- )?image: \"?([^\s\"]+)\"?$", rendered, re.M))


def check_overrides(rendered: dict[str, str], values: dict[str, dict[str, Any]]) -> list[str]:
    """Each image override in a values file must show in that file's render."""
    problems = []
    for name, given in values.items():
        registry = given.get("image", {}).get("registry", "registry.example.com/lattice")
        tag = given.get("image", {}).get("tag", "0.1.0")
        found = images(rendered[name])
        for service in ("gateway", "registry", "inference", "trainer", "triton"):
            section = given.get(service, {})
            if service == "triton" and section.get("enabled") is False:
                continue
            digest = section.get("digest")
            if not digest and service == "triton":
                continue  # Triton has its own tag by default
            want = f"{registry}/{service}@{digest}" if digest else f"{registry}/{service}:{tag}"
            if want not in found:
                problems.append(f"{name}: {service} image {want} not rendered (found {found})")
    return problems


def main(out: Path) -> int:
    out.mkdir(parents=True, exist_ok=True)
    values = values_files()
    problems: list[str] = []
    rendered: dict[str, str] = {}
    for name, given in values.items():
        problems += lint(name, given)
        rendered[name] = render(given)
        (out / f"helm-{name}.yaml").write_text(rendered[name])
        kinds = len(re.findall(r"^kind: ", rendered[name], re.M))
        print(f"helm {name}: lint clean, {kinds} resources rendered")
    problems += check_overrides(rendered, values)
    try:  # the chart refuses a public plaintext listener
        render({"gateway": {"service": {"type": "LoadBalancer"}}})
        problems.append("a LoadBalancer gateway without TLS rendered; it must be refused")
    except helm_python.HelmError as exc:
        print(f"helm refuses a plaintext public gateway: {str(exc).splitlines()[-1][:100]}")
    for problem in problems:
        print(problem, file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1])))
