"""Structural promises of deploy/, checked cheaply on the committed output.

deploy/check.sh renders the overlays with kubectl kustomize and fails when
deploy/k8s/rendered/ is stale, so these tests read the rendered YAML with
PyYAML and need none of the heavy tools (kubectl, checkov, hadolint).
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
OVERLAYS = ("dev", "prod")
SERVICES = {"gateway": 50051, "registry": 50052, "inference": 50053, "trainer": 50054}
SECRETISH = re.compile(r"SECRET|PASSWORD|TOKEN|REDIS_URL|_KEY$")


def rendered(overlay: str) -> list[dict[str, Any]]:
    text = (DEPLOY / "k8s" / "rendered" / f"{overlay}.yaml").read_text()
    return [doc for doc in yaml.safe_load_all(text) if doc]


def of_kind(docs: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == kind}


def containers(deployment: dict[str, Any]) -> list[dict[str, Any]]:
    return deployment["spec"]["template"]["spec"]["containers"]


@pytest.fixture(params=OVERLAYS)
def docs(request: pytest.FixtureRequest) -> list[dict[str, Any]]:
    return rendered(request.param)


def test_every_deployment_has_probes_resources_and_a_locked_down_security_context(docs):
    deployments = of_kind(docs, "Deployment")
    assert set(SERVICES) | {"triton", "otel-collector"} <= set(deployments)
    for name, dep in deployments.items():
        pod = dep["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True, name
        assert pod["securityContext"]["runAsUser"] >= 10000, name
        assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault", name
        assert dep["metadata"]["namespace"] == "lattice", name
        for c in containers(dep):
            assert "readinessProbe" in c and "livenessProbe" in c, (name, c["name"])
            for kind in ("requests", "limits"):
                assert {"cpu", "memory"} <= set(c["resources"][kind]), (name, kind)
            ctx = c["securityContext"]
            assert ctx["allowPrivilegeEscalation"] is False, name
            assert ctx["readOnlyRootFilesystem"] is True, name
            assert ctx["capabilities"]["drop"] == ["ALL"], name
            assert not ctx.get("privileged"), name


def _serves_tls(container: dict[str, Any]) -> bool:
    return any(e["name"].endswith("_TLS_CERT_FILE") for e in container.get("env", []))


def test_lattice_services_use_native_grpc_health_probes_on_their_port(docs):
    deployments = of_kind(docs, "Deployment")
    for name, port in SERVICES.items():
        (c,) = containers(deployments[name])
        http = {8080} if name == "gateway" else set()  # the gateway's HTTP front
        assert {p["containerPort"] for p in c["ports"]} == {port, 9464} | http
        if _serves_tls(c):  # kubelet's grpc probe speaks plaintext only
            for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
                assert c[probe].get("grpc") is None, (name, probe)
                assert c[probe].get("tcpSocket", {}).get("port") == port or (
                    c[probe].get("httpGet", {}).get("scheme") == "HTTPS"
                ), (name, probe)
            continue
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            if name == "gateway" and probe == "livenessProbe":
                assert c[probe]["httpGet"] == {"path": "/healthz", "port": "http"}
                continue
            assert c[probe]["grpc"]["port"] == port, (name, probe)
        assert c["readinessProbe"]["grpc"]["service"].startswith("lattice.v1."), name
        assert c["envFrom"] == [
            {"configMapRef": {"name": "lattice-common"}},
            {"configMapRef": {"name": f"lattice-{name}"}},
        ]


def test_prod_has_no_plaintext_public_listener():
    docs = rendered("prod")
    public = [
        s["metadata"]["name"]
        for s in of_kind(docs, "Service").values()
        if s["spec"].get("type") in ("LoadBalancer", "NodePort")
    ]
    assert public == ["gateway"]
    gateway = of_kind(docs, "Deployment")["gateway"]
    (c,) = containers(gateway)
    env = {e["name"]: e.get("value") for e in c.get("env", [])}
    assert env["LATTICE_GATEWAY_TLS_CERT_FILE"] == "/etc/lattice/tls/tls.crt"
    assert env["LATTICE_GATEWAY_TLS_KEY_FILE"] == "/etc/lattice/tls/tls.key"
    volumes = {v["name"]: v for v in gateway["spec"]["template"]["spec"]["volumes"]}
    assert volumes["tls"]["secret"]["optional"] is False  # no certificate, no start


def test_prod_wires_mutual_tls_between_the_services_from_cert_manager():
    """Each service mounts its own certificate; the internal ones serve with it and
    demand one from callers, everyone calls upstream presenting theirs."""
    docs = rendered("prod")
    certificates = of_kind(docs, "Certificate")
    deployments = of_kind(docs, "Deployment")
    for name in SERVICES:
        certificate = certificates[f"lattice-{name}-mtls"]["spec"]
        assert set(certificate["usages"]) == {"server auth", "client auth"}, name
        assert name in certificate["dnsNames"], name
        spec = deployments[name]["spec"]["template"]["spec"]
        (c,) = containers(deployments[name])
        volumes = {v["name"]: v for v in spec["volumes"]}
        assert volumes["mtls"]["secret"]["secretName"] == certificate["secretName"], name
        assert volumes["mtls"]["secret"]["optional"] is False, name
        mounts = {m["name"]: m["mountPath"] for m in c["volumeMounts"]}
        env = {e["name"]: e.get("value") for e in c.get("env", [])}
        files = ("ca.crt", "tls.crt", "tls.key")
        if name == "gateway":
            keys = ("UPSTREAM_CA_FILE", "UPSTREAM_CERT_FILE", "UPSTREAM_KEY_FILE")
            wanted = dict(zip(keys, files, strict=True))
        else:
            wanted = {
                "TLS_CERT_FILE": "tls.crt",
                "TLS_KEY_FILE": "tls.key",
                "TLS_CLIENT_CA_FILE": "ca.crt",
                "TLS_CA_FILE": "ca.crt",
            }
        for key, file in wanted.items():
            assert env[f"LATTICE_{name.upper()}_{key}"] == f"{mounts['mtls']}/{file}", (name, key)
    # The gateway reaches the replicas by the headless Service's name.
    inference = certificates["lattice-inference-mtls"]["spec"]["dnsNames"]
    assert "inference-headless.lattice.svc.cluster.local" in inference


def test_every_service_reads_the_one_key_ring(docs):
    config = of_kind(docs, "ConfigMap")["lattice-common"]["data"]
    path = config["LATTICE_KEY_RING_FILE"]
    deployments = of_kind(docs, "Deployment")
    for name in SERVICES:
        spec = deployments[name]["spec"]["template"]["spec"]
        (c,) = containers(deployments[name])
        mounts = {m["name"]: m for m in c["volumeMounts"]}
        assert path.startswith(mounts["keys"]["mountPath"] + "/") and mounts["keys"]["readOnly"]
        volumes = {v["name"]: v for v in spec["volumes"]}
        assert volumes["keys"]["secret"]["secretName"] == "lattice-keyring", name


def test_gateway_service_and_policy_publish_the_http_port(docs):
    service = of_kind(docs, "Service")["gateway"]
    assert {"name": "http", "port": 8080, "targetPort": "http", "appProtocol": "http"} in (
        service["spec"]["ports"]
    )
    policy = of_kind(docs, "NetworkPolicy")["gateway-public"]
    assert {"port": 8080, "protocol": "TCP"} in policy["spec"]["ingress"][0]["ports"]
    assert of_kind(docs, "ConfigMap")["lattice-gateway"]["data"]["LATTICE_GATEWAY_HTTP_PORT"]


def test_gateway_and_inference_have_a_pdb_and_an_hpa(docs):
    pdbs = of_kind(docs, "PodDisruptionBudget")
    hpas = of_kind(docs, "HorizontalPodAutoscaler")
    for name in ("gateway", "inference"):
        assert pdbs[name]["spec"]["selector"]["matchLabels"] == {"app.kubernetes.io/name": name}
        target = hpas[name]["spec"]["scaleTargetRef"]
        assert (target["kind"], target["name"]) == ("Deployment", name)
        assert 1 <= hpas[name]["spec"]["minReplicas"] < hpas[name]["spec"]["maxReplicas"]
        # The HPA owns the count; a fixed one would be reset by every `kubectl apply`.
        assert "replicas" not in of_kind(docs, "Deployment")[name]["spec"], name


def test_registry_is_one_replica_on_a_volume_replaced_not_rolled(docs):
    registry = of_kind(docs, "Deployment")["registry"]
    assert registry["spec"]["replicas"] == 1
    assert registry["spec"]["strategy"]["type"] == "Recreate"
    volumes = {v["name"]: v for v in registry["spec"]["template"]["spec"]["volumes"]}
    claim = volumes["data"]["persistentVolumeClaim"]["claimName"]
    assert claim in of_kind(docs, "PersistentVolumeClaim")
    assert "registry" not in of_kind(docs, "HorizontalPodAutoscaler")


def test_no_secret_material_in_the_repo(docs):
    assert not of_kind(docs, "Secret"), "Secrets are created out of band, never committed"
    for dep in of_kind(docs, "Deployment").values():
        for c in containers(dep):
            for env in c.get("env", []):
                if SECRETISH.search(env["name"]) and env.get("value"):
                    pytest.fail(f"literal value for {env['name']} in {dep['metadata']['name']}")
    for cm in of_kind(docs, "ConfigMap").values():
        for key, value in (cm.get("data") or {}).items():
            if SECRETISH.search(key):
                assert "@" not in value and ":@" not in value, key


def test_only_the_gateway_is_open_to_the_outside(docs):
    policies = of_kind(docs, "NetworkPolicy")
    deny = policies["default-deny-ingress"]["spec"]
    assert deny["podSelector"] == {} and deny["policyTypes"] == ["Ingress"]
    assert "ingress" not in deny
    for name, policy in policies.items():
        for rule in policy["spec"].get("ingress", []):
            sources = rule.get("from")
            if name == "gateway-public":
                assert sources is None and rule["ports"] == [
                    {"port": 50051, "protocol": "TCP"},  # gRPC
                    {"port": 8080, "protocol": "TCP"},  # HTTP
                ]
                continue
            assert sources, f"{name} admits every source"
            for source in sources:
                assert "ipBlock" not in source, name
                if "namespaceSelector" in source:  # the cluster's Prometheus only
                    assert (name, rule["ports"]) == (
                        "otel-collector-ingest",
                        [{"port": 8889, "protocol": "TCP"}],
                    )
    services = of_kind(docs, "Service")
    exposed = {n for n, s in services.items() if s["spec"].get("type", "ClusterIP") != "ClusterIP"}
    assert exposed <= {"gateway"}


def test_triton_gets_a_gpu_in_prod_and_runs_on_cpu_in_dev():
    for overlay, gpus in (("prod", 1), ("dev", None)):
        triton = of_kind(rendered(overlay), "Deployment")["triton"]
        (c,) = containers(triton)
        assert c["resources"]["limits"].get("nvidia.com/gpu") == gpus, overlay
        assert "--model-repository=/models" in c["args"]
        mounts = {m["mountPath"]: m for m in c["volumeMounts"]}
        assert mounts["/models"]["readOnly"] is True
    config = of_kind(rendered("prod"), "ConfigMap")["lattice-inference"]["data"]
    assert config["LATTICE_INFERENCE_TRITON_URL"] == "triton:8001"


def _settings_fields() -> dict[str, set[str]]:
    """Field names of each service's settings dataclass, read from source (no imports)."""

    def fields(path: Path, cls: str) -> set[str]:
        tree = ast.parse(path.read_text())
        (node,) = [n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == cls]
        return {
            s.target.id
            for s in node.body
            if isinstance(s, ast.AnnAssign) and isinstance(s.target, ast.Name)
        }

    base = fields(ROOT / "services/runtime/settings.py", "ServerSettings")
    return {
        name: base | fields(ROOT / f"services/{name}/server.py", f"{name.title()}Settings")
        for name in SERVICES
    }


def _lattice_variables() -> Iterator[tuple[str, str]]:
    for overlay in OVERLAYS:
        for doc in rendered(overlay):
            if doc["kind"] == "ConfigMap":
                for key in doc.get("data") or {}:
                    yield f"{overlay}: ConfigMap {doc['metadata']['name']}", key
            if doc["kind"] == "Deployment":
                for c in containers(doc):
                    for env in c.get("env", []):
                        yield f"{overlay}: Deployment {doc['metadata']['name']}", env["name"]
    compose = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())
    for name, service in compose["services"].items():
        for key in service.get("environment") or {}:
            yield f"compose: {name}", key


def test_every_lattice_variable_names_a_real_setting():
    """A typo'd or renamed setting would be silently ignored; catch it here."""
    fields = _settings_fields()
    every = set().union(*fields.values())
    checked = 0
    for where, key in _lattice_variables():
        if not key.startswith("LATTICE_") or key == "LATTICE_JOB_SPEC":
            continue
        rest = key.removeprefix("LATTICE_").lower()
        service = rest.split("_", 1)[0]
        if service in fields and rest.split("_", 1)[1:]:
            ok = rest.split("_", 1)[1] in fields[service]
        else:
            ok = rest in every
        assert ok, f"{where}: {key} matches no settings field"
        checked += 1
    assert checked > 40


def test_images_pin_the_extras_and_the_gateway_carries_no_torch():
    dockerfile = (DEPLOY / "docker" / "Dockerfile").read_text()
    found = re.findall(r"^FROM (\S+) AS (\S+)$", dockerfile, re.M)
    parents = {stage: base for base, stage in found}

    def chain(stage: str) -> list[str]:
        return [stage, *chain(parents[stage])] if stage in parents else [stage]

    for service in ("gateway", "registry"):
        assert "server-base" in chain(service) and "ml-base" not in chain(service)
    for service in ("inference", "trainer"):
        assert "ml-base" in chain(service)
    server = (DEPLOY / "docker" / "requirements" / "server.txt").read_text()
    assert not re.search(r"^(torch|transformers|triton|nvidia-)", server, re.M)
    pyproject = (ROOT / "pyproject.toml").read_text()
    for extra, path in (("server", "server.txt"), ("ml", "ml.txt")):
        pins = (DEPLOY / "docker" / "requirements" / path).read_text()
        pinned = {line.split("==")[0] for line in pins.splitlines() if "==" in line}
        assert all("==" in line for line in pins.splitlines() if line and line[0] != "#")
        block = re.search(rf"^{extra} = \[(.*?)^\]", pyproject, re.M | re.S)
        for requirement in re.findall(r'"([A-Za-z0-9_.\-]+)', block.group(1)):
            name = requirement.lower()
            if name in ("lattice-llm", "torch"):
                continue
            assert name in pinned or name.replace("-", "_") in pinned, (
                f"{name} ({extra}) is not pinned: run deploy/docker/pin_requirements.py"
            )


def test_compose_runs_every_piece_and_publishes_only_the_gateway_widely():
    compose = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())
    services = compose["services"]
    assert set(SERVICES) | {"redis", "triton", "otel-collector", "jaeger"} <= set(services)
    for name, service in services.items():
        assert "image" in service or "build" in service, name
        assert service.get("user") == "10001:10001" and service.get("read_only") is True, name
        assert service.get("cap_drop") == ["ALL"], name
        for target in service.get("depends_on") or []:
            assert target in services, (name, target)
        for port in service.get("ports", []):
            if name != "gateway":
                assert str(port).startswith("127.0.0.1:"), (name, port)
    gpu = yaml.safe_load((DEPLOY / "docker-compose.gpu.yml").read_text())
    (device,) = gpu["services"]["triton"]["deploy"]["resources"]["reservations"]["devices"]
    assert device["capabilities"] == ["gpu"]
