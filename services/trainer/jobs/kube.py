"""Create, watch and delete PyTorchJobs with the official Kubernetes client.

Blocking calls (the client is synchronous); the launcher runs them in threads.
Every failure the API can answer with becomes a trainer error that says what
to do: no permission (the Role), no such kind (the training operator is not
installed), a name taken, or the API server out of reach. Nothing leaves as
an unexplained internal error.
"""

from __future__ import annotations

import dataclasses
import json
import threading
from typing import Any, cast

import urllib3
from kubernetes import client, config, watch
from kubernetes.client.exceptions import ApiException

from lattice.errors import AlreadyExists, FailedPrecondition, LatticeError, Unavailable
from services.trainer.jobs.pytorchjob import GROUP, JOB_LABEL, PLURAL, VERSION

#: Conditions the training operator sets on a finished job.
DONE = ("Succeeded", "Failed")


@dataclasses.dataclass(frozen=True)
class Outcome:
    #: "Succeeded", "Failed" or "Deleted" (gone before it finished).
    state: str
    message: str = ""


def conditions(obj: dict[str, Any]) -> list[dict[str, Any]]:
    return list((obj.get("status") or {}).get("conditions") or [])


def finished(obj: dict[str, Any]) -> Outcome | None:
    """The job's end, from its status conditions (None while it runs)."""
    for condition in reversed(conditions(obj)):
        if condition.get("type") in DONE and condition.get("status") == "True":
            return Outcome(condition["type"], condition.get("message", ""))
    return None


def _reason(error: ApiException) -> str:
    try:
        return str(json.loads(error.body or "")["message"])
    except (ValueError, KeyError, TypeError):
        return str(error.reason or "no reason given")


class PyTorchJobs:
    """PyTorchJobs of one namespace (the trainer's service account or kubeconfig)."""

    def __init__(
        self, api: client.ApiClient, namespace: str, watch_seconds: int = 60, timeout: float = 15
    ) -> None:
        self.api = client.CustomObjectsApi(api)
        self.host = api.configuration.host
        self.namespace = namespace
        self.watch_seconds = watch_seconds
        self.timeout = timeout

    @classmethod
    def connect(cls, kubeconfig: str, namespace: str, watch_seconds: int = 60) -> PyTorchJobs:
        """In-cluster (service account token and CA) unless a kubeconfig file is named."""
        configuration = client.Configuration()
        try:
            if kubeconfig:
                config.load_kube_config(config_file=kubeconfig, client_configuration=configuration)
            else:
                config.load_incluster_config(client_configuration=configuration)
        except config.ConfigException as error:
            raise ValueError(f"no Kubernetes API to submit PyTorchJobs to: {error}") from None
        configuration.retries = 1  # fail fast; the runner decides about retrying
        return cls(client.ApiClient(configuration), namespace, watch_seconds)

    def _error(self, error: Exception, doing: str, name: str = "") -> LatticeError:
        where = f"in namespace {self.namespace}"
        if isinstance(error, ApiException):
            status, reason = error.status, _reason(error)
            if status in (401, 403):
                return FailedPrecondition(
                    f"the Kubernetes API refused to let the trainer {doing} {where} "
                    f"(HTTP {status}: {reason}); bind the Role trainer-pytorchjobs "
                    "(deploy/k8s/base/trainer.yaml) to the trainer's service account"
                )
            if status == 404:
                return FailedPrecondition(
                    f"no PyTorchJob kind (kubeflow.org/v1) {where}: is the Kubeflow "
                    f"training operator installed? ({reason})"
                )
            if status == 409:
                return AlreadyExists(f"PyTorchJob {name} already exists {where}: {reason}")
            if status in (400, 422):
                return FailedPrecondition(f"the API server refused PyTorchJob {name}: {reason}")
            return Unavailable(
                f"the Kubernetes API server could not {doing} (HTTP {status}: {reason})"
            )
        return Unavailable(f"the Kubernetes API server at {self.host} is unreachable ({doing})")

    def create(self, obj: dict[str, Any]) -> None:
        name = obj["metadata"]["name"]
        try:
            self.api.create_namespaced_custom_object(
                GROUP, VERSION, self.namespace, PLURAL, obj, _request_timeout=self.timeout
            )
        except (ApiException, urllib3.exceptions.HTTPError, OSError) as error:
            raise self._error(error, "create PyTorchJobs", name) from None

    def get(self, name: str) -> dict[str, Any] | None:
        try:
            found = self.api.get_namespaced_custom_object(
                GROUP, VERSION, self.namespace, PLURAL, name, _request_timeout=self.timeout
            )
            return cast(dict[str, Any], found)
        except ApiException as error:
            if error.status == 404:
                return None
            raise self._error(error, "read PyTorchJobs", name) from None
        except (urllib3.exceptions.HTTPError, OSError) as error:
            raise self._error(error, "read PyTorchJobs", name) from None

    def delete(self, name: str) -> bool:
        """Delete the job and its pods; False when it was already gone."""
        try:
            self.api.delete_namespaced_custom_object(
                GROUP,
                VERSION,
                self.namespace,
                PLURAL,
                name,
                propagation_policy="Foreground",
                _request_timeout=self.timeout,
            )
        except ApiException as error:
            if error.status == 404:
                return False
            raise self._error(error, "delete PyTorchJobs", name) from None
        except (urllib3.exceptions.HTTPError, OSError) as error:
            raise self._error(error, "delete PyTorchJobs", name) from None
        return True

    def names_for(self, label: str) -> list[str]:
        """Every PyTorchJob of one Lattice job (all its attempts)."""
        try:
            listing = self.api.list_namespaced_custom_object(
                GROUP,
                VERSION,
                self.namespace,
                PLURAL,
                label_selector=f"{JOB_LABEL}={label}",
                _request_timeout=self.timeout,
            )
        except (ApiException, urllib3.exceptions.HTTPError, OSError) as error:
            raise self._error(error, "list PyTorchJobs") from None
        items = cast(dict[str, Any], listing).get("items", [])
        return [item["metadata"]["name"] for item in items]

    def wait(self, name: str, stopping: threading.Event, on_change=None) -> Outcome:
        """Watch one job until it has finished or is gone (or `stopping` is set and
        the current watch ends). `on_change(conditions)` hears each new status."""
        seen: list[dict[str, Any]] = []
        while True:
            current = self.get(name)
            if current is None:
                return Outcome("Deleted")
            for obj in [current, *self._watch(name)]:
                if obj is None:
                    return Outcome("Deleted")
                if conditions(obj) != seen:
                    seen = conditions(obj)
                    if on_change is not None:
                        on_change(seen)
                done = finished(obj)
                if done is not None:
                    return done
            if stopping.is_set():
                return Outcome("Deleted")

    def _watch(self, name: str):
        """Objects from one watch of `name` (None for its deletion), ending after
        `watch_seconds` (the server closes the stream)."""
        stream = watch.Watch().stream(
            self.api.list_namespaced_custom_object,
            GROUP,
            VERSION,
            self.namespace,
            PLURAL,
            field_selector=f"metadata.name={name}",
            timeout_seconds=self.watch_seconds,
            _request_timeout=self.watch_seconds + self.timeout,
            deserialize=False,
        )
        try:
            for event in stream:
                if event["type"] == "DELETED":
                    yield None
                    return
                if event["type"] in ("ADDED", "MODIFIED"):
                    yield event["object"]
        except (ApiException, urllib3.exceptions.HTTPError, OSError) as error:
            raise self._error(error, "watch PyTorchJobs", name) from None
