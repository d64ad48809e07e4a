"""Print every service setting as Markdown, read from the settings dataclasses.

Reads the source (no imports, so no torch) of services/runtime/settings.py
and services/<name>/server.py: each field, its default, and its `#:` comment.
deploy/README.md's settings section is this output:

    python deploy/settings_table.py > /tmp/settings.md
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SERVICES = ("gateway", "registry", "inference", "trainer")
#: Meanings for fields whose dataclass has no `#:` comment (or shares one above).
FALLBACK = {
    "host": "Interface to bind (gRPC and /metrics); 0.0.0.0 in containers.",
    "port": "gRPC port.",
    "data_dir": "Root for service state; each service uses data_dir/<service>.",
    "log_level": "Python logging level (DEBUG, INFO, WARNING ...).",
    "registry_address": "The registry (host:port).",
    "inference_addresses": "Inference replicas, comma-separated host:port or dns:/// targets.",
    "trainer_address": "The trainer (host:port).",
    "cache_local_bytes": "Memory bound of the in-process tier in bytes (answers, request text).",
    "jwks_url": "JWKS URL of the identity provider (alternative to jwks_file).",
    "jwt_issuer": "Required `iss` claim.",
    "jwt_audience": "Required `aud` claim.",
    "jwt_algorithms": "Accepted JWT algorithms, comma-separated.",
    "jwt_leeway_seconds": "Clock skew allowed on exp/nbf.",
    "jwt_max_bytes": "Longest token accepted.",
    "jwt_tenant_claim": "Claim that names the caller's tenant.",
    "quota_tokens": "Tokens per tenant per quota window; 0 = unlimited.",
    "quota_window_seconds": "Length of the quota window.",
    "outlier_ejection_seconds": "First ejection's length (doubles on each ejection).",
    "tls_key_file": "Server TLS private key (PEM).",
    "tls_client_ca_file": "CA for client certificates (mutual TLS).",
    "upstream_cert_file": "Client certificate for mTLS to upstreams.",
    "upstream_key_file": "Client key for mTLS to upstreams.",
    "cache_ttl_seconds": "Lifetime of a cached response.",
    "max_batch_wait_ms": "Longest wait for a micro-batch to fill.",
    "default_max_new_tokens": "max_new_tokens when a request sets none.",
    "histogram_interval_steps": "Weight histograms every M steps.",
}


def fields(path: Path, cls: str) -> list[tuple[str, str, str]]:
    """(name, default source, doc comment) for each annotated field of `cls`."""
    source = path.read_text()
    lines = source.splitlines()
    (node,) = [n for n in ast.parse(source).body if isinstance(n, ast.ClassDef) and n.name == cls]
    out = []
    for stmt in node.body:
        if not (isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name)):
            continue
        doc: list[str] = []
        row = stmt.lineno - 2
        while row >= 0 and lines[row].strip().startswith("#:"):
            doc.insert(0, lines[row].strip()[2:].strip())
            row -= 1
        default = ast.get_source_segment(source, stmt.value) if stmt.value else ""
        text = " ".join(doc) or FALLBACK.get(stmt.target.id, "")
        out.append((stmt.target.id, default or "", text))
    return out


def table(service: str | None) -> str:
    if service is None:
        rows = fields(ROOT / "services/runtime/settings.py", "ServerSettings")
        head = "| Variable (any service) | Default | Meaning |\n|---|---|---|\n"
        return head + "".join(f"| `LATTICE_{f.upper()}` | `{d}` | {doc} |\n" for f, d, doc in rows)
    base = {f for f, _, _ in fields(ROOT / "services/runtime/settings.py", "ServerSettings")}
    rows = fields(ROOT / f"services/{service}/server.py", f"{service.title()}Settings")
    head = f"| Variable ({service}) | Default | Meaning |\n|---|---|---|\n"
    body = "".join(
        f"| `LATTICE_{service.upper()}_{f.upper()}` | `{d}` | {doc} |\n"
        for f, d, doc in rows
        if f not in base or f == "port"
    )
    return head + body


def main() -> None:
    print(table(None))
    for service in SERVICES:
        print(table(service))


if __name__ == "__main__":
    main()
