"""The suite's key ring: versioned secrets, rotation, one small KMS interface.

Everything that seals or signs in Lattice (internal caller tokens, cache
entries, artifact signatures) asks a `KeyManager` for key material by
*purpose* and, when reading, by *key id*. New writes use the newest version;
every older version still opens what it sealed, so a rotation never needs a
re-encryption pass (Vault transit's model: `rotate`, old versions keep
decrypting).

`LocalKeyRing` is the embedded default: a JSON file (mode 0600) in the data
directory, or a file mounted from a Kubernetes secret. It holds one random
32-byte root secret per version; the key for a purpose is derived with
HKDF-SHA256 (info = purpose), so one rotation renews every purpose at once
and no two purposes ever share a key. The file is re-read when it changes
(checked at most once a second), so `lattice keys rotate` reaches running
services without a restart.

An external KMS fits behind the same two methods; see the README section
"Keys and encryption" for Vault transit and cloud KMS.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import datetime as dt
import json
import os
import secrets
import threading
import time
from pathlib import Path
from typing import Protocol

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from lattice.errors import FailedPrecondition

#: Where `lattice up` and the services keep the ring inside the data directory.
DEFAULT_KEY_RING_PATH = Path("keys") / "keyring.json"
KEY_BYTES = 32
#: The purposes in use; each gets its own derived key per version.
PURPOSE_INTERNAL_TOKEN = "lattice internal token v1"
PURPOSE_CACHE_SEAL = "lattice cache seal v1"
PURPOSE_ARTIFACT_SIGNATURE = "lattice artifact signature v1"
PURPOSE_ARTIFACT_MANIFEST = "lattice artifact manifest v1"
PURPOSE_ARTIFACT_AT_REST = "lattice artifact at rest v1"
PURPOSE_DATASET_AT_REST = "lattice dataset at rest v1"


class UnknownKey(FailedPrecondition):
    """A key id the ring does not hold (never issued here, or removed)."""


@dataclasses.dataclass(frozen=True)
class Key:
    """Key material for one purpose at one version; `kid` travels with what it sealed."""

    kid: str
    material: bytes


class KeyManager(Protocol):
    """What sealing and signing code needs from a KMS."""

    def current(self, purpose: str) -> Key:
        """The newest key for `purpose` (new writes use it)."""
        ...

    def find(self, purpose: str, kid: str) -> Key:
        """The key `kid` for `purpose`; UnknownKey if the ring does not hold it."""
        ...


def _kid(version: int) -> str:
    return f"k{version}"


def _derive(secret: bytes, purpose: str) -> bytes:
    return HKDF(hashes.SHA256(), KEY_BYTES, salt=None, info=purpose.encode()).derive(secret)


def _new_version(version: int) -> dict[str, object]:
    return {
        "version": version,
        "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "secret": base64.b64encode(secrets.token_bytes(KEY_BYTES)).decode(),
    }


def _write_new(path: Path, document: dict[str, object]) -> None:
    """Write `document` to `path` atomically with mode 0600 (replacing it)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = path.with_name(f".{path.name}.{secrets.token_hex(4)}")
    fd = os.open(staging, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        json.dump(document, handle, indent=1)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(staging, path)


def create_key_ring(path: Path) -> bool:
    """Create a ring with one version at `path` unless one exists; True if created.

    Several services starting at once may race here: the file is linked into
    place, which fails if another process won, so all of them end up reading
    the same ring.
    """
    if path.exists():
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = path.with_name(f".{path.name}.{secrets.token_hex(4)}")
    fd = os.open(staging, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        json.dump({"versions": [_new_version(1)]}, handle, indent=1)
        handle.flush()
        os.fsync(handle.fileno())
    try:
        os.link(staging, path)
        return True
    except FileExistsError:
        return False
    finally:
        staging.unlink()


def rotate_key_ring(path: Path) -> int:
    """Add a new newest version to the ring at `path`; returns its number."""
    ring = LocalKeyRing(path)
    versions = ring.versions()
    number = max(versions) + 1
    document = json.loads(path.read_text())
    document["versions"].append(_new_version(number))
    _write_new(path, document)
    return number


class LocalKeyRing:
    """A `KeyManager` over a key ring file (see the module docstring)."""

    def __init__(self, path: Path, *, reload_interval: float = 1.0) -> None:
        self.path = path
        self._reload_interval = reload_interval
        self._lock = threading.Lock()
        self._secrets: dict[int, bytes] = {}
        self._derived: dict[tuple[str, str], Key] = {}
        self._stamp: tuple[int, int] | None = None
        self._checked = float("-inf")
        self._load()

    @classmethod
    def open_or_create(cls, path: Path) -> LocalKeyRing:
        """The ring at `path`, created with one version on first use."""
        create_key_ring(path)
        return cls(path)

    def versions(self) -> list[int]:
        self._maybe_reload()
        return sorted(self._secrets)

    def current(self, purpose: str) -> Key:
        self._maybe_reload()
        return self._key(purpose, max(self._secrets))

    def find(self, purpose: str, kid: str) -> Key:
        self._maybe_reload()
        try:
            version = int(kid[1:]) if kid.startswith("k") else -1
        except ValueError:
            version = -1
        if version not in self._secrets and self._secrets and version > max(self._secrets):
            # A newer version than we know: another process rotated the ring and signs
            # with it already. Look at the file now instead of at the next interval
            # (one stat; a forged kid costs no more than that).
            self._maybe_reload(force=True)
        if version not in self._secrets:
            raise UnknownKey(f"key {kid!r} is not in the key ring {self.path}")
        return self._key(purpose, version)

    def _key(self, purpose: str, version: int) -> Key:
        kid = _kid(version)
        key = self._derived.get((purpose, kid))
        if key is None:
            key = Key(kid, _derive(self._secrets[version], purpose))
            self._derived[(purpose, kid)] = key
        return key

    def _maybe_reload(self, *, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._checked < self._reload_interval:
            return
        self._checked = now
        with contextlib.suppress(OSError):
            stat = self.path.stat()
            if (stat.st_mtime_ns, stat.st_size) != self._stamp:
                self._load()

    def _load(self) -> None:
        with self._lock:
            try:
                stat = self.path.stat()
                document = json.loads(self.path.read_text())
                loaded = {
                    int(entry["version"]): base64.b64decode(entry["secret"], validate=True)
                    for entry in document["versions"]
                }
            except (OSError, ValueError, KeyError, TypeError) as exc:
                if self._secrets:  # keep serving with what we had; say why
                    return
                raise FailedPrecondition(f"cannot read the key ring {self.path}: {exc}") from None
            if not loaded or any(len(s) != KEY_BYTES for s in loaded.values()):
                if self._secrets:
                    return
                raise FailedPrecondition(f"the key ring {self.path} holds no valid key")
            self._secrets = loaded
            self._stamp = (stat.st_mtime_ns, stat.st_size)
