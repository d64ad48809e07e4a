from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Optional as _Optional

DESCRIPTOR: _descriptor.FileDescriptor

class ModelTask(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    MODEL_TASK_UNSPECIFIED: _ClassVar[ModelTask]
    MODEL_TASK_TEXT_GENERATION: _ClassVar[ModelTask]
    MODEL_TASK_EMBEDDING: _ClassVar[ModelTask]
    MODEL_TASK_CLASSIFICATION: _ClassVar[ModelTask]

class ArtifactFormat(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ARTIFACT_FORMAT_UNSPECIFIED: _ClassVar[ArtifactFormat]
    ARTIFACT_FORMAT_TRANSFORMERS: _ClassVar[ArtifactFormat]
    ARTIFACT_FORMAT_TRITON: _ClassVar[ArtifactFormat]
    ARTIFACT_FORMAT_WORD_VECTORS: _ClassVar[ArtifactFormat]
MODEL_TASK_UNSPECIFIED: ModelTask
MODEL_TASK_TEXT_GENERATION: ModelTask
MODEL_TASK_EMBEDDING: ModelTask
MODEL_TASK_CLASSIFICATION: ModelTask
ARTIFACT_FORMAT_UNSPECIFIED: ArtifactFormat
ARTIFACT_FORMAT_TRANSFORMERS: ArtifactFormat
ARTIFACT_FORMAT_TRITON: ArtifactFormat
ARTIFACT_FORMAT_WORD_VECTORS: ArtifactFormat

class Usage(_message.Message):
    __slots__ = ("prompt_tokens", "completion_tokens", "total_tokens")
    PROMPT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    COMPLETION_TOKENS_FIELD_NUMBER: _ClassVar[int]
    TOTAL_TOKENS_FIELD_NUMBER: _ClassVar[int]
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    def __init__(self, prompt_tokens: _Optional[int] = ..., completion_tokens: _Optional[int] = ..., total_tokens: _Optional[int] = ...) -> None: ...
