"""TrainerService over gRPC: convert the request, call the domain, convert the reply."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator

from lattice.errors import InvalidArgument
from lattice.v1 import trainer_pb2, trainer_pb2_grpc
from services.runtime.identity import caller_of
from services.trainer.data.service import DatasetService
from services.trainer.data.uploads import SourceUploads
from services.trainer.jobs.runner import JobRunner

MAX_PAGE = 1000
DEFAULT_PAGE = 50
#: Offsets and sequence numbers go to SQLite, whose integers are signed 64-bit.
MAX_SQL_INTEGER = 2**63 - 1
_TOKEN = re.compile(r"[0-9]{1,18}")


def _page(size: int, token: str) -> tuple[int, int]:
    if size < 0:
        raise InvalidArgument("page_size", "must not be negative")
    if token and not _TOKEN.fullmatch(token):
        raise InvalidArgument("page_token", "not a token this listing returned")
    return int(token or 0), min(size or DEFAULT_PAGE, MAX_PAGE)


def _next(offset: int, limit: int, got: int) -> str:
    return str(offset + limit) if got == limit else ""


class TrainerServicer(trainer_pb2_grpc.TrainerServiceServicer):
    def __init__(self, datasets: DatasetService, jobs: JobRunner, uploads: SourceUploads) -> None:
        self.datasets = datasets
        self.jobs = jobs
        self.uploads = uploads

    async def PrepareDataset(self, request, context):
        if not request.HasField("spec"):
            raise InvalidArgument("spec", "required")
        dataset = await self.datasets.prepare(caller_of(context), request.spec)
        return trainer_pb2.PrepareDatasetResponse(dataset=dataset)

    async def GetDataset(self, request, context):
        dataset = self.datasets.get(caller_of(context), request.dataset_id)
        return trainer_pb2.GetDatasetResponse(dataset=dataset)

    async def ListDatasets(self, request, context):
        offset, limit = _page(request.page_size, request.page_token)
        datasets = self.datasets.list(caller_of(context), offset, limit)
        return trainer_pb2.ListDatasetsResponse(
            datasets=datasets, next_page_token=_next(offset, limit, len(datasets))
        )

    async def SubmitJob(self, request, context):
        if not request.HasField("spec"):
            raise InvalidArgument("spec", "required")
        job = await self.jobs.submit(caller_of(context), request.spec, request.request_id)
        return trainer_pb2.SubmitJobResponse(job=job)

    async def GetJob(self, request, context):
        return trainer_pb2.GetJobResponse(job=self.jobs.get(caller_of(context), request.job_id))

    async def ListJobs(self, request, context):
        offset, limit = _page(request.page_size, request.page_token)
        jobs = self.jobs.list(caller_of(context), list(request.states), offset, limit)
        return trainer_pb2.ListJobsResponse(
            jobs=jobs, next_page_token=_next(offset, limit, len(jobs))
        )

    async def CancelJob(self, request, context):
        job = await self.jobs.cancel(caller_of(context), request.job_id)
        return trainer_pb2.CancelJobResponse(job=job)

    async def WatchJob(self, request, context) -> AsyncIterator[trainer_pb2.WatchJobResponse]:
        if not request.job_id:
            raise InvalidArgument("job_id", "required")
        if request.from_sequence > MAX_SQL_INTEGER:
            raise InvalidArgument("from_sequence", f"must be at most {MAX_SQL_INTEGER}")
        events = self.jobs.watch(caller_of(context), request.job_id, request.from_sequence)
        async for event in events:
            yield event

    async def UploadSources(self, request_iterator, context):
        caller = caller_of(context)
        first = await anext(aiter(request_iterator), None)
        if first is None or first.WhichOneof("payload") != "target":
            raise InvalidArgument("target", "the first message must name the target directory")
        return await self.uploads.upload(caller, first.target, request_iterator)
