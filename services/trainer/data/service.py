"""Async face of dataset preparation: fetch a base tokenizer if asked, then run
the CPU-bound pipeline in a worker thread so the server keeps serving."""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from pathlib import Path

from lattice.errors import FailedPrecondition, InvalidArgument
from lattice.v1 import trainer_pb2
from services.trainer.data.prepare import DatasetPreparer, validate_spec
from services.trainer.data.store import DatasetStore
from services.trainer.registry_client import RegistryClient


class DatasetService:
    def __init__(
        self, store: DatasetStore, registry: RegistryClient | None, on_prepared=None
    ) -> None:
        self.store = store
        self.preparer = DatasetPreparer(store)
        self.registry = registry
        self._on_prepared = on_prepared

    async def prepare(self, spec: trainer_pb2.DatasetSpec) -> trainer_pb2.Dataset:
        validate_spec(spec)
        base_dir = None
        scratch = None
        try:
            if spec.tokenizer.base_model:
                if self.registry is None:
                    raise FailedPrecondition("reusing a tokenizer needs a registry")
                try:
                    version = await self.registry.resolve_version(spec.tokenizer.base_model)
                except ValueError as error:
                    raise InvalidArgument("spec.tokenizer.base_model", str(error)) from None
                scratch = Path(tempfile.mkdtemp(prefix=".base-", dir=self.store.root))
                base_dir = await self.registry.download(version, scratch / "model")
            dataset = await asyncio.to_thread(self.preparer.prepare, spec, base_dir)
        finally:
            if scratch is not None:
                shutil.rmtree(scratch, ignore_errors=True)
        if self._on_prepared:
            self._on_prepared(dataset)
        return dataset

    def get(self, dataset_id: str) -> trainer_pb2.Dataset:
        return self.store.get(dataset_id)

    def list(self, offset: int, limit: int) -> list[trainer_pb2.Dataset]:
        return self.store.list()[offset : offset + limit]
