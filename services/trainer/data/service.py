"""Async face of dataset preparation: fetch a base tokenizer if asked, then run
the CPU-bound pipeline in a worker thread so the server keeps serving.

Validation walks the caller's sources (a directory may hold many thousands of
files), so it runs off the event loop too. Both run on a small pool of their
own (`workers` threads): concurrent preparations queue there instead of taking
every thread the process has, and no RPC waits behind a directory walk."""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import shutil
import tempfile
from pathlib import Path

from lattice.errors import FailedPrecondition, InvalidArgument
from lattice.v1 import trainer_pb2
from services.runtime.identity import Caller
from services.trainer.data.confine import SourceRoots
from services.trainer.data.prepare import DatasetPreparer, validate_spec
from services.trainer.data.store import DatasetStore
from services.trainer.registry_client import RegistryClient


class DatasetService:
    def __init__(
        self,
        store: DatasetStore,
        registry: RegistryClient | None,
        roots: SourceRoots,
        on_prepared=None,
        *,
        workers: int = 2,
    ) -> None:
        self.store = store
        self.roots = roots
        self.preparer = DatasetPreparer(store, roots)
        self.registry = registry
        self._on_prepared = on_prepared
        self._pool = concurrent.futures.ThreadPoolExecutor(
            max_workers=max(1, workers), thread_name_prefix="dataset-prep"
        )

    async def off_loop(self, fn, *args, **kwargs):
        """Run `fn` on the service's bounded worker pool."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, functools.partial(fn, *args, **kwargs))

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

    async def prepare(self, caller: Caller, spec: trainer_pb2.DatasetSpec) -> trainer_pb2.Dataset:
        """Prepare a dataset owned by the caller's tenant, from its source roots only."""
        confine = self.roots.for_tenant(caller.tenant)
        await self.off_loop(validate_spec, spec, confine)
        base_dir = None
        scratch = None
        try:
            if spec.tokenizer.base_model:
                if self.registry is None:
                    raise FailedPrecondition("reusing a tokenizer needs a registry")
                try:
                    registry = self.registry.as_caller(caller)
                    version = await registry.resolve_version(spec.tokenizer.base_model)
                except ValueError as error:
                    raise InvalidArgument("spec.tokenizer.base_model", str(error)) from None
                scratch = Path(tempfile.mkdtemp(prefix=".base-", dir=self.store.root))
                base_dir = await registry.download(version, scratch / "model")
            dataset = await self.off_loop(
                self.preparer.prepare, spec, base_dir, tenant=caller.tenant
            )
        finally:
            if scratch is not None:
                shutil.rmtree(scratch, ignore_errors=True)
        if self._on_prepared:
            self._on_prepared(dataset)
        return dataset

    def get(self, caller: Caller, dataset_id: str) -> trainer_pb2.Dataset:
        return self.store.visible(caller, dataset_id)

    def list(self, caller: Caller, offset: int, limit: int) -> list[trainer_pb2.Dataset]:
        return self.store.list_for(caller)[offset : offset + limit]
