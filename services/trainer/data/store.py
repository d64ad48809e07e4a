"""Content-addressed, versioned dataset store on the local disk.

Each dataset is a directory `<data_dir>/datasets/<name>-<digest12>/` holding the
cleaned text (`train.jsonl`, `validation.jsonl`), the token streams
(`train.bin`, `validation.bin`, little-endian uint16/uint32), `meta.json` and
the `tokenizer/` directory, plus `dataset.binpb` (the `Dataset` message). It is
built in a temporary directory and renamed into place, so a crash never
leaves half a dataset under a real id. Preparing identical data again returns
the existing dataset.

A dataset belongs to the tenant that prepared it. Its id mixes in the tenant
(`<name>-<first 12 of sha256(tenant, digest)>`), so two tenants preparing the
same data get two datasets, never each other's; `visible`/`list_for` answer
for a caller (another tenant's dataset is NOT_FOUND). Records written before
datasets had owners are given `default_tenant` when loaded; those owned by an
old name of the system tenant are given `SYSTEM_TENANT`.

With `encrypt` (and the key ring), a new dataset's files are sealed before it
is moved into place (`services.trainer.data.at_rest`); `files()` reads any
dataset, sealed or plain.
"""

from __future__ import annotations

import hashlib
import shutil
import tempfile
import threading
from pathlib import Path

from google.protobuf import timestamp_pb2

from lattice.errors import NotFound
from lattice.tokens import LEGACY_SYSTEM_TENANTS, SYSTEM_TENANT
from lattice.v1 import trainer_pb2
from services.runtime.identity import Caller
from services.runtime.keys import KeyManager
from services.trainer.data.at_rest import DatasetFiles, DatasetSealer

RECORD = "dataset.binpb"


def directory_digest(directory: Path) -> str:
    """sha256 over every file's relative path and content (except the record)."""
    digest = hashlib.sha256()
    for path in sorted(p for p in directory.rglob("*") if p.is_file()):
        relative = path.relative_to(directory).as_posix()
        if relative == RECORD:
            continue
        file_hash = hashlib.sha256(path.read_bytes()).hexdigest()
        digest.update(f"{relative}\0{file_hash}\n".encode())
    return digest.hexdigest()


def dataset_id(name: str, tenant: str, digest: str) -> str:
    owned = hashlib.sha256(f"{tenant}\0{digest}".encode()).hexdigest()
    return f"{name}-{owned[:12]}"


class DatasetStore:
    def __init__(
        self,
        root: Path,
        *,
        default_tenant: str = "default",
        keys: KeyManager | None = None,
        encrypt: bool = False,
    ) -> None:
        if encrypt and keys is None:
            raise ValueError("encrypting datasets at rest needs the key ring (keys)")
        self.root = root
        self._keys = keys
        self._sealer = DatasetSealer(keys) if encrypt and keys is not None else None
        self.root.mkdir(parents=True, exist_ok=True)
        # A staging directory outlives its preparation only when the trainer died
        # mid-way (one trainer owns a data directory: one replica, Recreate). Its
        # files are the plaintext a sealed dataset exists to keep off the disk.
        for stale in self.root.glob(".staging-*"):
            shutil.rmtree(stale, ignore_errors=True)
        self._lock = threading.Lock()
        self._cache: dict[str, trainer_pb2.Dataset] = {}
        for record in self.root.glob(f"*/{RECORD}"):
            dataset = trainer_pb2.Dataset.FromString(record.read_bytes())
            if not dataset.tenant or dataset.tenant in LEGACY_SYSTEM_TENANTS:
                # written before datasets had owners, or by the old system tenant name
                dataset.tenant = SYSTEM_TENANT if dataset.tenant else default_tenant
                record.write_bytes(dataset.SerializeToString())
            self._cache[dataset.id] = dataset

    def staging_dir(self) -> Path:
        """A fresh directory to build a dataset in (removed by `commit`/`discard`)."""
        return Path(tempfile.mkdtemp(prefix=".staging-", dir=self.root))

    def discard(self, staging: Path) -> None:
        shutil.rmtree(staging, ignore_errors=True)

    def commit(self, staging: Path, dataset: trainer_pb2.Dataset) -> trainer_pb2.Dataset:
        """Give the staged dataset its digest, id and version and move it into place.

        `dataset.tenant` must name its owner already.
        """
        assert dataset.tenant, "a dataset needs an owning tenant"
        digest = directory_digest(staging)
        new_id = dataset_id(dataset.name, dataset.tenant, digest)
        with self._lock:
            existing = self._cache.get(new_id)
            if existing is not None:
                self.discard(staging)
                return existing
            dataset.id = new_id
            dataset.digest = digest
            dataset.version = 1 + sum(
                1
                for d in self._cache.values()
                if d.name == dataset.name and d.tenant == dataset.tenant
            )
            now = timestamp_pb2.Timestamp()
            now.GetCurrentTime()
            dataset.create_time.CopyFrom(now)
            if self._sealer is not None:
                self._sealer.seal(staging, new_id)
            (staging / RECORD).write_bytes(dataset.SerializeToString())
            staging.rename(self.root / new_id)
            self._cache[new_id] = dataset
            return dataset

    def get(self, dataset_id: str) -> trainer_pb2.Dataset:
        """Any tenant's dataset: for the service itself (a job's own dataset)."""
        dataset = self._cache.get(dataset_id)
        if dataset is None:
            raise NotFound(f"dataset {dataset_id!r} not found")
        return dataset

    def visible(self, caller: Caller, dataset_id: str) -> trainer_pb2.Dataset:
        """The dataset if the caller may see it; another tenant's is NOT_FOUND."""
        dataset = self._cache.get(dataset_id)
        if dataset is None or not caller.may_see(dataset.tenant):
            raise NotFound(f"dataset {dataset_id!r} not found")
        return dataset

    def list_for(self, caller: Caller) -> list[trainer_pb2.Dataset]:
        """The caller's datasets (every tenant's for admins), newest first."""
        return [d for d in self.list() if caller.may_see(d.tenant)]

    def path(self, dataset_id: str) -> Path:
        self.get(dataset_id)
        return self.root / dataset_id

    @property
    def keys(self) -> KeyManager | None:
        """The key ring that opens datasets encrypted at rest (None: none configured)."""
        return self._keys

    def files(self, dataset_id: str) -> DatasetFiles:
        """The dataset's files as plaintext (sealed or not on disk)."""
        return DatasetFiles(self.path(dataset_id), self._keys)

    def list(self) -> list[trainer_pb2.Dataset]:
        """Newest first."""
        return sorted(
            self._cache.values(),
            key=lambda d: (d.create_time.seconds, d.create_time.nanos, d.id),
            reverse=True,
        )
