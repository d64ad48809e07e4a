"""Validate rendered manifests: Kubernetes kinds and the PyTorchJob CRD.

Built-in kinds go through `kubernetes-validate` (strict: unknown fields are
errors) for every Kubernetes version given. A PyTorchJob is checked against
the schema kept in deploy/k8s/training/pytorchjob.schema.json, and each of
its pod templates against core/v1 PodTemplateSpec the same strict way. A kind
with no schema at all is an error, not a warning. Run by deploy/check.sh in
its tools venv:

    python deploy/validate_manifests.py --k8s 1.30.0 --k8s 1.37.0 FILE.yaml ...
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import yaml

K8S = Path(__file__).resolve().parent / "k8s"
#: Custom resources: a JSON schema each (the fields our manifests use, strictly).
SCHEMAS = {
    ("kubeflow.org/v1", "PyTorchJob"): K8S / "training" / "pytorchjob.schema.json",
    ("cert-manager.io/v1", "Certificate"): K8S / "crds" / "certificate.schema.json",
    ("gateway.networking.k8s.io/v1", "HTTPRoute"): K8S / "crds" / "httproute.schema.json",
    ("gateway.networking.k8s.io/v1", "GRPCRoute"): K8S / "crds" / "grpcroute.schema.json",
}


def documents(path: Path) -> Iterator[dict[str, Any]]:
    for doc in yaml.safe_load_all(path.read_text()):
        if doc:
            yield doc


def _schema_errors(doc: dict[str, Any]) -> list[str]:
    schema = json.loads(SCHEMAS[(doc["apiVersion"], doc["kind"])].read_text())
    validator = jsonschema.Draft202012Validator(schema)
    return [
        f"{'.'.join(map(str, e.absolute_path)) or '(root)'}: {e.message}"
        for e in validator.iter_errors(doc)
    ]


def _pytorchjob_errors(doc: dict[str, Any], version: str) -> list[str]:
    errors = _schema_errors(doc)
    if errors:
        return errors
    spec = doc["spec"]
    elastic = spec.get("elasticPolicy", {})
    if elastic.get("minReplicas", 1) > elastic.get("maxReplicas", elastic.get("minReplicas", 1)):
        errors.append("spec.elasticPolicy: minReplicas > maxReplicas")
    for role, replica in spec["pytorchReplicaSpecs"].items():
        template = replica["template"]
        names = [c.get("name") for c in template.get("spec", {}).get("containers", [])]
        if "pytorch" not in names:
            errors.append(f"{role}: the training operator needs a container named 'pytorch'")
        wrapped = {
            "apiVersion": "v1",
            "kind": "PodTemplate",
            "metadata": {"name": f"{doc['metadata']['name']}-{role.lower()}"},
            "template": template,
        }
        try:
            kubernetes_validate.validate(wrapped, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            errors.append(f"pytorchReplicaSpecs.{role}.{exc.message}")
    return errors


def validate(doc: dict[str, Any], version: str) -> list[str]:
    """Error messages for one resource against one Kubernetes version."""
    key = (doc.get("apiVersion"), doc.get("kind"))
    if key == ("kubeflow.org/v1", "PyTorchJob"):
        return _pytorchjob_errors(doc, version)
    if key in SCHEMAS:
        return _schema_errors(doc)
    try:
        kubernetes_validate.validate(doc, version, strict=True)
    except kubernetes_validate.SchemaNotFoundError:
        return [f"no schema for {key[1]} {key[0]}: add one under deploy/k8s/ and to SCHEMAS"]
    except kubernetes_validate.ValidationError as exc:
        return [f"{'.'.join(map(str, exc.path)) or '(root)'}: {exc.message}"]
    return []


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--k8s", action="append", help="Kubernetes version(s), e.g. 1.37.0")
    parser.add_argument("files", nargs="+", type=Path)
    args = parser.parse_args(argv)
    versions = args.k8s or [kubernetes_validate.latest_version()]
    failed = checked = 0
    for path in args.files:
        for doc in documents(path):
            name = f"{doc.get('kind')}/{doc.get('metadata', {}).get('name')}"
            for version in versions:
                checked += 1
                for error in validate(doc, version):
                    failed += 1
                    print(f"FAIL {path}: {name} (k8s {version}): {error}", file=sys.stderr)
    print(f"validate: {checked} resource checks, {failed} errors ({', '.join(versions)})")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
