"""A stand-in for kube-apiserver, because a cluster cannot run here (no container
runtime, no kubelet, no network): the trainer's PyTorchJob client is tested
against it over real HTTP on loopback, with the real `kubernetes` client on the
other end.

It serves only what the trainer calls, the way the real API server answers:
create/get/list/delete of `kubeflow.org/v1` pytorchjobs in a namespace, watches
as chunked streams of JSON events (`?watch=true`, `timeoutSeconds`), bearer
token authentication, and `Status` bodies with the real codes (401, 403, 404,
409). Tests play the training operator by setting status conditions
(`set_condition`). Faults are switched on its attributes: `forbidden` verbs,
`crd_installed`.
"""

from __future__ import annotations

import json
import re
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import yaml

_PATH = re.compile(
    r"^/apis/kubeflow\.org/v1/namespaces/(?P<ns>[^/]+)/pytorchjobs(?:/(?P<name>[^/]+))?$"
)


def _status(code: int, reason: str, message: str) -> dict[str, Any]:
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    }


class StandInApiServer:
    def __init__(self, token: str = "trainer-token") -> None:
        self.token = token
        self.objects: dict[tuple[str, str], dict[str, Any]] = {}
        #: (type, namespace, object) in order; watches replay from their start.
        self.events: list[tuple[str, str, dict[str, Any]]] = []
        self.requests: list[tuple[str, str]] = []
        self.forbidden: set[str] = set()
        self.crd_installed = True
        #: Watches opened so far.
        self.watches = 0
        self._changed = threading.Condition()
        self._version = 0
        handler = type("Handler", (_Handler,), {"api": self})
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_port}"

    def start(self) -> None:
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        with self._changed:
            self._changed.notify_all()

    def kubeconfig(self, path: Path, token: str | None = None) -> Path:
        """A kubeconfig for this server, as `kubectl config` writes one."""
        path.write_text(
            yaml.safe_dump(
                {
                    "apiVersion": "v1",
                    "kind": "Config",
                    "clusters": [{"name": "stand-in", "cluster": {"server": self.url}}],
                    "users": [{"name": "trainer", "user": {"token": token or self.token}}],
                    "contexts": [
                        {"name": "ctx", "context": {"cluster": "stand-in", "user": "trainer"}}
                    ],
                    "current-context": "ctx",
                }
            )
        )
        return path

    # -- the operator's side --------------------------------------------------------------

    def set_condition(self, namespace: str, name: str, kind: str, message: str = "") -> None:
        """What the training operator does as pods start and end."""
        with self._changed:
            obj = self.objects[(namespace, name)]
            conditions = obj.setdefault("status", {}).setdefault("conditions", [])
            conditions.append(
                {"type": kind, "status": "True", "reason": f"PyTorchJob{kind}", "message": message}
            )
            self._record("MODIFIED", namespace, obj)

    def wait_for(self, predicate, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        with self._changed:
            while not predicate():
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError("the stand-in API server never saw that")
                self._changed.wait(left)

    def _record(self, kind: str, namespace: str, obj: dict[str, Any]) -> None:
        self._version += 1
        obj["metadata"]["resourceVersion"] = str(self._version)
        self.events.append((kind, namespace, json.loads(json.dumps(obj))))
        self._changed.notify_all()

    # -- the API ---------------------------------------------------------------------------

    def handle(self, method: str, path: str, auth: str, body: bytes):
        """(code, JSON body) or, for a watch, (200, iterator of events)."""
        url = urlparse(path)
        query = {k: v[0] for k, v in parse_qs(url.query).items()}
        with self._changed:
            self.requests.append((method, url.path))
            self._changed.notify_all()
        if auth != f"Bearer {self.token}":
            return 401, _status(401, "Unauthorized", "Unauthorized")
        match = _PATH.match(url.path)
        if match is None or not self.crd_installed:
            return 404, _status(404, "NotFound", "the server could not find the requested resource")
        ns, name = match["ns"], match["name"]
        verb = {"POST": "create", "DELETE": "delete"}.get(method, "get" if name else "list")
        if query.get("watch") == "true":
            verb = "watch"
        if verb in self.forbidden:
            return 403, _status(
                403,
                "Forbidden",
                f'pytorchjobs.kubeflow.org is forbidden: User "system:serviceaccount:{ns}:'
                f'trainer" cannot {verb} resource "pytorchjobs" in API group "kubeflow.org" '
                f'in the namespace "{ns}"',
            )
        with self._changed:
            if method == "POST":
                obj = json.loads(body)
                key = (ns, obj["metadata"]["name"])
                if key in self.objects:
                    return 409, _status(
                        409, "AlreadyExists", f'pytorchjobs.kubeflow.org "{key[1]}" already exists'
                    )
                obj["metadata"].update(
                    namespace=ns,
                    uid=str(uuid.uuid4()),
                    creationTimestamp=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                )
                self.objects[key] = obj
                self._record("ADDED", ns, obj)
                return 201, obj
            if name is not None:
                obj = self.objects.get((ns, name))
                if obj is None:
                    return 404, _status(
                        404, "NotFound", f'pytorchjobs.kubeflow.org "{name}" not found'
                    )
                if method == "DELETE":
                    del self.objects[(ns, name)]
                    self._record("DELETED", ns, obj)
                    return 200, {"kind": "Status", "apiVersion": "v1", "status": "Success"}
                return 200, obj
            selected = [o for (n, _), o in self.objects.items() if n == ns and _matches(o, query)]
            if verb == "watch":
                # The list and the events after it, as of now (a resourceVersion).
                start, snapshot = len(self.events), json.loads(json.dumps(selected))
                self.watches += 1
                self._changed.notify_all()
                seconds = float(query["timeoutSeconds"])
                return 200, self._watch(ns, query, snapshot, start, seconds)
            return 200, {
                "apiVersion": "kubeflow.org/v1",
                "kind": "PyTorchJobList",
                "items": selected,
            }

    def _watch(self, ns, query, current, start: int, seconds: float) -> Iterator[dict[str, Any]]:
        for obj in current:
            yield {"type": "ADDED", "object": obj}
        deadline = time.monotonic() + seconds
        seen = start
        while True:
            with self._changed:
                while len(self.events) == seen:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        return
                    self._changed.wait(left)
                fresh, seen = self.events[seen:], len(self.events)
            for kind, namespace, obj in fresh:
                if namespace == ns and _matches(obj, query):
                    yield {"type": kind, "object": obj}


def _matches(obj: dict[str, Any], query: dict[str, str]) -> bool:
    field = query.get("fieldSelector", "")
    if field.startswith("metadata.name=") and obj["metadata"]["name"] != field.split("=", 1)[1]:
        return False
    label = query.get("labelSelector", "")
    if label:
        key, value = label.split("=", 1)
        return obj["metadata"].get("labels", {}).get(key) == value
    return True


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    api: StandInApiServer

    def _serve(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        code, payload = self.api.handle(
            self.command, self.path, self.headers.get("Authorization", ""), body
        )
        if isinstance(payload, dict):
            data = json.dumps(payload).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
            return
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Transfer-Encoding", "chunked")
        self.send_header("Connection", "close")
        self.end_headers()
        try:
            for event in payload:
                line = json.dumps(event).encode() + b"\n"
                self.wfile.write(f"{len(line):x}\r\n".encode() + line + b"\r\n")
                self.wfile.flush()
            self.wfile.write(b"0\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError):
            pass
        self.close_connection = True

    do_GET = do_POST = do_DELETE = _serve  # http.server dispatches on do_<METHOD>

    def log_message(self, *args) -> None:
        pass


@contextmanager
def running() -> Iterator[StandInApiServer]:
    server = StandInApiServer()
    server.start()
    try:
        yield server
    finally:
        server.stop()
