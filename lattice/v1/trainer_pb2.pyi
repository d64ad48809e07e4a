import datetime

from google.api import annotations_pb2 as _annotations_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class DataSourceRole(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    DATA_SOURCE_ROLE_UNSPECIFIED: _ClassVar[DataSourceRole]
    DATA_SOURCE_ROLE_USER_DICTIONARY: _ClassVar[DataSourceRole]
    DATA_SOURCE_ROLE_STOP_WORDS: _ClassVar[DataSourceRole]

class TokenizerKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    TOKENIZER_KIND_UNSPECIFIED: _ClassVar[TokenizerKind]
    TOKENIZER_KIND_BYTE_LEVEL_BPE: _ClassVar[TokenizerKind]
    TOKENIZER_KIND_WORDPIECE: _ClassVar[TokenizerKind]

class ModelFamily(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    MODEL_FAMILY_UNSPECIFIED: _ClassVar[ModelFamily]
    MODEL_FAMILY_GPT2_CAUSAL_LM: _ClassVar[ModelFamily]
    MODEL_FAMILY_BERT_MASKED_LM: _ClassVar[ModelFamily]
    MODEL_FAMILY_WORD2VEC: _ClassVar[ModelFamily]
    MODEL_FAMILY_GLOVE: _ClassVar[ModelFamily]
    MODEL_FAMILY_SEQUENCE_CLASSIFICATION: _ClassVar[ModelFamily]

class ClassificationBackbone(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    CLASSIFICATION_BACKBONE_UNSPECIFIED: _ClassVar[ClassificationBackbone]
    CLASSIFICATION_BACKBONE_GPT2: _ClassVar[ClassificationBackbone]
    CLASSIFICATION_BACKBONE_BERT: _ClassVar[ClassificationBackbone]

class WordVectorAlgorithm(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    WORD_VECTOR_ALGORITHM_UNSPECIFIED: _ClassVar[WordVectorAlgorithm]
    WORD_VECTOR_ALGORITHM_SKIP_GRAM: _ClassVar[WordVectorAlgorithm]
    WORD_VECTOR_ALGORITHM_CBOW: _ClassVar[WordVectorAlgorithm]

class WordSegmentation(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    WORD_SEGMENTATION_UNSPECIFIED: _ClassVar[WordSegmentation]
    WORD_SEGMENTATION_AUTO: _ClassVar[WordSegmentation]
    WORD_SEGMENTATION_WHITESPACE: _ClassVar[WordSegmentation]

class LearningRateSchedule(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    LEARNING_RATE_SCHEDULE_UNSPECIFIED: _ClassVar[LearningRateSchedule]
    LEARNING_RATE_SCHEDULE_CONSTANT: _ClassVar[LearningRateSchedule]
    LEARNING_RATE_SCHEDULE_LINEAR: _ClassVar[LearningRateSchedule]
    LEARNING_RATE_SCHEDULE_COSINE: _ClassVar[LearningRateSchedule]

class DistributedStrategy(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    DISTRIBUTED_STRATEGY_UNSPECIFIED: _ClassVar[DistributedStrategy]
    DISTRIBUTED_STRATEGY_DDP: _ClassVar[DistributedStrategy]
    DISTRIBUTED_STRATEGY_FSDP: _ClassVar[DistributedStrategy]
    DISTRIBUTED_STRATEGY_TENSOR_PARALLEL: _ClassVar[DistributedStrategy]
    DISTRIBUTED_STRATEGY_PIPELINE_PARALLEL: _ClassVar[DistributedStrategy]
    DISTRIBUTED_STRATEGY_HYBRID: _ClassVar[DistributedStrategy]

class DistributedBackend(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    DISTRIBUTED_BACKEND_UNSPECIFIED: _ClassVar[DistributedBackend]
    DISTRIBUTED_BACKEND_GLOO: _ClassVar[DistributedBackend]
    DISTRIBUTED_BACKEND_NCCL: _ClassVar[DistributedBackend]

class PipelineSchedule(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    PIPELINE_SCHEDULE_UNSPECIFIED: _ClassVar[PipelineSchedule]
    PIPELINE_SCHEDULE_GPIPE: _ClassVar[PipelineSchedule]
    PIPELINE_SCHEDULE_1F1B: _ClassVar[PipelineSchedule]

class AlertAction(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ALERT_ACTION_UNSPECIFIED: _ClassVar[AlertAction]
    ALERT_ACTION_WARN: _ClassVar[AlertAction]
    ALERT_ACTION_STOP: _ClassVar[AlertAction]
    ALERT_ACTION_STOP_KEEP_BEST: _ClassVar[AlertAction]
    ALERT_ACTION_REDUCE_LR: _ClassVar[AlertAction]
    ALERT_ACTION_ROLLBACK: _ClassVar[AlertAction]

class JobState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    JOB_STATE_UNSPECIFIED: _ClassVar[JobState]
    JOB_STATE_QUEUED: _ClassVar[JobState]
    JOB_STATE_RUNNING: _ClassVar[JobState]
    JOB_STATE_REGISTERING: _ClassVar[JobState]
    JOB_STATE_SUCCEEDED: _ClassVar[JobState]
    JOB_STATE_FAILED: _ClassVar[JobState]
    JOB_STATE_CANCELLED: _ClassVar[JobState]
    JOB_STATE_FAILED_QUALITY_GATE: _ClassVar[JobState]

class AlertKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ALERT_KIND_UNSPECIFIED: _ClassVar[AlertKind]
    ALERT_KIND_NON_FINITE: _ClassVar[AlertKind]
    ALERT_KIND_GRADIENT_EXPLOSION: _ClassVar[AlertKind]
    ALERT_KIND_DIVERGENCE: _ClassVar[AlertKind]
    ALERT_KIND_OVERFITTING: _ClassVar[AlertKind]
DATA_SOURCE_ROLE_UNSPECIFIED: DataSourceRole
DATA_SOURCE_ROLE_USER_DICTIONARY: DataSourceRole
DATA_SOURCE_ROLE_STOP_WORDS: DataSourceRole
TOKENIZER_KIND_UNSPECIFIED: TokenizerKind
TOKENIZER_KIND_BYTE_LEVEL_BPE: TokenizerKind
TOKENIZER_KIND_WORDPIECE: TokenizerKind
MODEL_FAMILY_UNSPECIFIED: ModelFamily
MODEL_FAMILY_GPT2_CAUSAL_LM: ModelFamily
MODEL_FAMILY_BERT_MASKED_LM: ModelFamily
MODEL_FAMILY_WORD2VEC: ModelFamily
MODEL_FAMILY_GLOVE: ModelFamily
MODEL_FAMILY_SEQUENCE_CLASSIFICATION: ModelFamily
CLASSIFICATION_BACKBONE_UNSPECIFIED: ClassificationBackbone
CLASSIFICATION_BACKBONE_GPT2: ClassificationBackbone
CLASSIFICATION_BACKBONE_BERT: ClassificationBackbone
WORD_VECTOR_ALGORITHM_UNSPECIFIED: WordVectorAlgorithm
WORD_VECTOR_ALGORITHM_SKIP_GRAM: WordVectorAlgorithm
WORD_VECTOR_ALGORITHM_CBOW: WordVectorAlgorithm
WORD_SEGMENTATION_UNSPECIFIED: WordSegmentation
WORD_SEGMENTATION_AUTO: WordSegmentation
WORD_SEGMENTATION_WHITESPACE: WordSegmentation
LEARNING_RATE_SCHEDULE_UNSPECIFIED: LearningRateSchedule
LEARNING_RATE_SCHEDULE_CONSTANT: LearningRateSchedule
LEARNING_RATE_SCHEDULE_LINEAR: LearningRateSchedule
LEARNING_RATE_SCHEDULE_COSINE: LearningRateSchedule
DISTRIBUTED_STRATEGY_UNSPECIFIED: DistributedStrategy
DISTRIBUTED_STRATEGY_DDP: DistributedStrategy
DISTRIBUTED_STRATEGY_FSDP: DistributedStrategy
DISTRIBUTED_STRATEGY_TENSOR_PARALLEL: DistributedStrategy
DISTRIBUTED_STRATEGY_PIPELINE_PARALLEL: DistributedStrategy
DISTRIBUTED_STRATEGY_HYBRID: DistributedStrategy
DISTRIBUTED_BACKEND_UNSPECIFIED: DistributedBackend
DISTRIBUTED_BACKEND_GLOO: DistributedBackend
DISTRIBUTED_BACKEND_NCCL: DistributedBackend
PIPELINE_SCHEDULE_UNSPECIFIED: PipelineSchedule
PIPELINE_SCHEDULE_GPIPE: PipelineSchedule
PIPELINE_SCHEDULE_1F1B: PipelineSchedule
ALERT_ACTION_UNSPECIFIED: AlertAction
ALERT_ACTION_WARN: AlertAction
ALERT_ACTION_STOP: AlertAction
ALERT_ACTION_STOP_KEEP_BEST: AlertAction
ALERT_ACTION_REDUCE_LR: AlertAction
ALERT_ACTION_ROLLBACK: AlertAction
JOB_STATE_UNSPECIFIED: JobState
JOB_STATE_QUEUED: JobState
JOB_STATE_RUNNING: JobState
JOB_STATE_REGISTERING: JobState
JOB_STATE_SUCCEEDED: JobState
JOB_STATE_FAILED: JobState
JOB_STATE_CANCELLED: JobState
JOB_STATE_FAILED_QUALITY_GATE: JobState
ALERT_KIND_UNSPECIFIED: AlertKind
ALERT_KIND_NON_FINITE: AlertKind
ALERT_KIND_GRADIENT_EXPLOSION: AlertKind
ALERT_KIND_DIVERGENCE: AlertKind
ALERT_KIND_OVERFITTING: AlertKind

class DataSource(_message.Message):
    __slots__ = ("path", "builtin", "text_field", "encoding", "role", "label_field")
    PATH_FIELD_NUMBER: _ClassVar[int]
    BUILTIN_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_FIELD_NUMBER: _ClassVar[int]
    ENCODING_FIELD_NUMBER: _ClassVar[int]
    ROLE_FIELD_NUMBER: _ClassVar[int]
    LABEL_FIELD_FIELD_NUMBER: _ClassVar[int]
    path: str
    builtin: str
    text_field: str
    encoding: str
    role: DataSourceRole
    label_field: str
    def __init__(self, path: _Optional[str] = ..., builtin: _Optional[str] = ..., text_field: _Optional[str] = ..., encoding: _Optional[str] = ..., role: _Optional[_Union[DataSourceRole, str]] = ..., label_field: _Optional[str] = ...) -> None: ...

class CleaningOptions(_message.Message):
    __slots__ = ("normalize_unicode", "strip_markup", "normalize_whitespace", "min_chars", "max_chars", "deduplicate", "near_deduplicate", "near_duplicate_threshold", "remove_stop_words", "language", "script_conversion", "segment_words", "stop_words")
    NORMALIZE_UNICODE_FIELD_NUMBER: _ClassVar[int]
    STRIP_MARKUP_FIELD_NUMBER: _ClassVar[int]
    NORMALIZE_WHITESPACE_FIELD_NUMBER: _ClassVar[int]
    MIN_CHARS_FIELD_NUMBER: _ClassVar[int]
    MAX_CHARS_FIELD_NUMBER: _ClassVar[int]
    DEDUPLICATE_FIELD_NUMBER: _ClassVar[int]
    NEAR_DEDUPLICATE_FIELD_NUMBER: _ClassVar[int]
    NEAR_DUPLICATE_THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    REMOVE_STOP_WORDS_FIELD_NUMBER: _ClassVar[int]
    LANGUAGE_FIELD_NUMBER: _ClassVar[int]
    SCRIPT_CONVERSION_FIELD_NUMBER: _ClassVar[int]
    SEGMENT_WORDS_FIELD_NUMBER: _ClassVar[int]
    STOP_WORDS_FIELD_NUMBER: _ClassVar[int]
    normalize_unicode: bool
    strip_markup: bool
    normalize_whitespace: bool
    min_chars: int
    max_chars: int
    deduplicate: bool
    near_deduplicate: bool
    near_duplicate_threshold: float
    remove_stop_words: bool
    language: str
    script_conversion: str
    segment_words: bool
    stop_words: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, normalize_unicode: _Optional[bool] = ..., strip_markup: _Optional[bool] = ..., normalize_whitespace: _Optional[bool] = ..., min_chars: _Optional[int] = ..., max_chars: _Optional[int] = ..., deduplicate: _Optional[bool] = ..., near_deduplicate: _Optional[bool] = ..., near_duplicate_threshold: _Optional[float] = ..., remove_stop_words: _Optional[bool] = ..., language: _Optional[str] = ..., script_conversion: _Optional[str] = ..., segment_words: _Optional[bool] = ..., stop_words: _Optional[_Iterable[str]] = ...) -> None: ...

class TokenizerOptions(_message.Message):
    __slots__ = ("kind", "vocab_size", "base_model")
    KIND_FIELD_NUMBER: _ClassVar[int]
    VOCAB_SIZE_FIELD_NUMBER: _ClassVar[int]
    BASE_MODEL_FIELD_NUMBER: _ClassVar[int]
    kind: TokenizerKind
    vocab_size: int
    base_model: str
    def __init__(self, kind: _Optional[_Union[TokenizerKind, str]] = ..., vocab_size: _Optional[int] = ..., base_model: _Optional[str] = ...) -> None: ...

class DatasetSpec(_message.Message):
    __slots__ = ("name", "sources", "cleaning", "tokenizer", "validation_fraction", "seed")
    NAME_FIELD_NUMBER: _ClassVar[int]
    SOURCES_FIELD_NUMBER: _ClassVar[int]
    CLEANING_FIELD_NUMBER: _ClassVar[int]
    TOKENIZER_FIELD_NUMBER: _ClassVar[int]
    VALIDATION_FRACTION_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    name: str
    sources: _containers.RepeatedCompositeFieldContainer[DataSource]
    cleaning: CleaningOptions
    tokenizer: TokenizerOptions
    validation_fraction: float
    seed: int
    def __init__(self, name: _Optional[str] = ..., sources: _Optional[_Iterable[_Union[DataSource, _Mapping]]] = ..., cleaning: _Optional[_Union[CleaningOptions, _Mapping]] = ..., tokenizer: _Optional[_Union[TokenizerOptions, _Mapping]] = ..., validation_fraction: _Optional[float] = ..., seed: _Optional[int] = ...) -> None: ...

class DatasetReport(_message.Message):
    __slots__ = ("documents_in", "documents_out", "dropped", "invalid_bytes", "train_documents", "validation_documents", "train_tokens", "validation_tokens", "vocab_size", "encodings", "repaired_documents", "stop_words_removed", "languages", "converted_documents", "segmented_documents", "stop_words_removed_by_language", "near_duplicates_dropped", "undecodable_files", "label_counts")
    class DroppedEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    class EncodingsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    class LanguagesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    class StopWordsRemovedByLanguageEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    class LabelCountsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    DOCUMENTS_IN_FIELD_NUMBER: _ClassVar[int]
    DOCUMENTS_OUT_FIELD_NUMBER: _ClassVar[int]
    DROPPED_FIELD_NUMBER: _ClassVar[int]
    INVALID_BYTES_FIELD_NUMBER: _ClassVar[int]
    TRAIN_DOCUMENTS_FIELD_NUMBER: _ClassVar[int]
    VALIDATION_DOCUMENTS_FIELD_NUMBER: _ClassVar[int]
    TRAIN_TOKENS_FIELD_NUMBER: _ClassVar[int]
    VALIDATION_TOKENS_FIELD_NUMBER: _ClassVar[int]
    VOCAB_SIZE_FIELD_NUMBER: _ClassVar[int]
    ENCODINGS_FIELD_NUMBER: _ClassVar[int]
    REPAIRED_DOCUMENTS_FIELD_NUMBER: _ClassVar[int]
    STOP_WORDS_REMOVED_FIELD_NUMBER: _ClassVar[int]
    LANGUAGES_FIELD_NUMBER: _ClassVar[int]
    CONVERTED_DOCUMENTS_FIELD_NUMBER: _ClassVar[int]
    SEGMENTED_DOCUMENTS_FIELD_NUMBER: _ClassVar[int]
    STOP_WORDS_REMOVED_BY_LANGUAGE_FIELD_NUMBER: _ClassVar[int]
    NEAR_DUPLICATES_DROPPED_FIELD_NUMBER: _ClassVar[int]
    UNDECODABLE_FILES_FIELD_NUMBER: _ClassVar[int]
    LABEL_COUNTS_FIELD_NUMBER: _ClassVar[int]
    documents_in: int
    documents_out: int
    dropped: _containers.ScalarMap[str, int]
    invalid_bytes: int
    train_documents: int
    validation_documents: int
    train_tokens: int
    validation_tokens: int
    vocab_size: int
    encodings: _containers.ScalarMap[str, int]
    repaired_documents: int
    stop_words_removed: int
    languages: _containers.ScalarMap[str, int]
    converted_documents: int
    segmented_documents: int
    stop_words_removed_by_language: _containers.ScalarMap[str, int]
    near_duplicates_dropped: int
    undecodable_files: _containers.RepeatedScalarFieldContainer[str]
    label_counts: _containers.ScalarMap[str, int]
    def __init__(self, documents_in: _Optional[int] = ..., documents_out: _Optional[int] = ..., dropped: _Optional[_Mapping[str, int]] = ..., invalid_bytes: _Optional[int] = ..., train_documents: _Optional[int] = ..., validation_documents: _Optional[int] = ..., train_tokens: _Optional[int] = ..., validation_tokens: _Optional[int] = ..., vocab_size: _Optional[int] = ..., encodings: _Optional[_Mapping[str, int]] = ..., repaired_documents: _Optional[int] = ..., stop_words_removed: _Optional[int] = ..., languages: _Optional[_Mapping[str, int]] = ..., converted_documents: _Optional[int] = ..., segmented_documents: _Optional[int] = ..., stop_words_removed_by_language: _Optional[_Mapping[str, int]] = ..., near_duplicates_dropped: _Optional[int] = ..., undecodable_files: _Optional[_Iterable[str]] = ..., label_counts: _Optional[_Mapping[str, int]] = ...) -> None: ...

class Dataset(_message.Message):
    __slots__ = ("id", "name", "digest", "spec", "report", "create_time", "version", "tenant")
    ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    DIGEST_FIELD_NUMBER: _ClassVar[int]
    SPEC_FIELD_NUMBER: _ClassVar[int]
    REPORT_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    TENANT_FIELD_NUMBER: _ClassVar[int]
    id: str
    name: str
    digest: str
    spec: DatasetSpec
    report: DatasetReport
    create_time: _timestamp_pb2.Timestamp
    version: int
    tenant: str
    def __init__(self, id: _Optional[str] = ..., name: _Optional[str] = ..., digest: _Optional[str] = ..., spec: _Optional[_Union[DatasetSpec, _Mapping]] = ..., report: _Optional[_Union[DatasetReport, _Mapping]] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., version: _Optional[int] = ..., tenant: _Optional[str] = ...) -> None: ...

class PrepareDatasetRequest(_message.Message):
    __slots__ = ("spec",)
    SPEC_FIELD_NUMBER: _ClassVar[int]
    spec: DatasetSpec
    def __init__(self, spec: _Optional[_Union[DatasetSpec, _Mapping]] = ...) -> None: ...

class PrepareDatasetResponse(_message.Message):
    __slots__ = ("dataset",)
    DATASET_FIELD_NUMBER: _ClassVar[int]
    dataset: Dataset
    def __init__(self, dataset: _Optional[_Union[Dataset, _Mapping]] = ...) -> None: ...

class GetDatasetRequest(_message.Message):
    __slots__ = ("dataset_id",)
    DATASET_ID_FIELD_NUMBER: _ClassVar[int]
    dataset_id: str
    def __init__(self, dataset_id: _Optional[str] = ...) -> None: ...

class GetDatasetResponse(_message.Message):
    __slots__ = ("dataset",)
    DATASET_FIELD_NUMBER: _ClassVar[int]
    dataset: Dataset
    def __init__(self, dataset: _Optional[_Union[Dataset, _Mapping]] = ...) -> None: ...

class ListDatasetsRequest(_message.Message):
    __slots__ = ("page_size", "page_token")
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListDatasetsResponse(_message.Message):
    __slots__ = ("datasets", "next_page_token")
    DATASETS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    datasets: _containers.RepeatedCompositeFieldContainer[Dataset]
    next_page_token: str
    def __init__(self, datasets: _Optional[_Iterable[_Union[Dataset, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class WordEmbeddingOptions(_message.Message):
    __slots__ = ("algorithm", "dimensions", "window", "min_count", "negative", "workers", "binary", "segmentation", "similarity_pairs_path", "analogies_path", "neighbour_samples", "glove_x_max", "glove_alpha", "glove_batch_size")
    ALGORITHM_FIELD_NUMBER: _ClassVar[int]
    DIMENSIONS_FIELD_NUMBER: _ClassVar[int]
    WINDOW_FIELD_NUMBER: _ClassVar[int]
    MIN_COUNT_FIELD_NUMBER: _ClassVar[int]
    NEGATIVE_FIELD_NUMBER: _ClassVar[int]
    WORKERS_FIELD_NUMBER: _ClassVar[int]
    BINARY_FIELD_NUMBER: _ClassVar[int]
    SEGMENTATION_FIELD_NUMBER: _ClassVar[int]
    SIMILARITY_PAIRS_PATH_FIELD_NUMBER: _ClassVar[int]
    ANALOGIES_PATH_FIELD_NUMBER: _ClassVar[int]
    NEIGHBOUR_SAMPLES_FIELD_NUMBER: _ClassVar[int]
    GLOVE_X_MAX_FIELD_NUMBER: _ClassVar[int]
    GLOVE_ALPHA_FIELD_NUMBER: _ClassVar[int]
    GLOVE_BATCH_SIZE_FIELD_NUMBER: _ClassVar[int]
    algorithm: WordVectorAlgorithm
    dimensions: int
    window: int
    min_count: int
    negative: int
    workers: int
    binary: bool
    segmentation: WordSegmentation
    similarity_pairs_path: str
    analogies_path: str
    neighbour_samples: _containers.RepeatedScalarFieldContainer[str]
    glove_x_max: float
    glove_alpha: float
    glove_batch_size: int
    def __init__(self, algorithm: _Optional[_Union[WordVectorAlgorithm, str]] = ..., dimensions: _Optional[int] = ..., window: _Optional[int] = ..., min_count: _Optional[int] = ..., negative: _Optional[int] = ..., workers: _Optional[int] = ..., binary: _Optional[bool] = ..., segmentation: _Optional[_Union[WordSegmentation, str]] = ..., similarity_pairs_path: _Optional[str] = ..., analogies_path: _Optional[str] = ..., neighbour_samples: _Optional[_Iterable[str]] = ..., glove_x_max: _Optional[float] = ..., glove_alpha: _Optional[float] = ..., glove_batch_size: _Optional[int] = ...) -> None: ...

class ModelArchitecture(_message.Message):
    __slots__ = ("num_layers", "num_heads", "hidden_size", "max_positions", "dropout")
    NUM_LAYERS_FIELD_NUMBER: _ClassVar[int]
    NUM_HEADS_FIELD_NUMBER: _ClassVar[int]
    HIDDEN_SIZE_FIELD_NUMBER: _ClassVar[int]
    MAX_POSITIONS_FIELD_NUMBER: _ClassVar[int]
    DROPOUT_FIELD_NUMBER: _ClassVar[int]
    num_layers: int
    num_heads: int
    hidden_size: int
    max_positions: int
    dropout: float
    def __init__(self, num_layers: _Optional[int] = ..., num_heads: _Optional[int] = ..., hidden_size: _Optional[int] = ..., max_positions: _Optional[int] = ..., dropout: _Optional[float] = ...) -> None: ...

class Hyperparameters(_message.Message):
    __slots__ = ("learning_rate", "schedule", "warmup_steps", "batch_size", "sequence_length", "max_steps", "epochs", "gradient_clip_norm", "weight_decay", "seed", "gradient_accumulation_steps")
    LEARNING_RATE_FIELD_NUMBER: _ClassVar[int]
    SCHEDULE_FIELD_NUMBER: _ClassVar[int]
    WARMUP_STEPS_FIELD_NUMBER: _ClassVar[int]
    BATCH_SIZE_FIELD_NUMBER: _ClassVar[int]
    SEQUENCE_LENGTH_FIELD_NUMBER: _ClassVar[int]
    MAX_STEPS_FIELD_NUMBER: _ClassVar[int]
    EPOCHS_FIELD_NUMBER: _ClassVar[int]
    GRADIENT_CLIP_NORM_FIELD_NUMBER: _ClassVar[int]
    WEIGHT_DECAY_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    GRADIENT_ACCUMULATION_STEPS_FIELD_NUMBER: _ClassVar[int]
    learning_rate: float
    schedule: LearningRateSchedule
    warmup_steps: int
    batch_size: int
    sequence_length: int
    max_steps: int
    epochs: int
    gradient_clip_norm: float
    weight_decay: float
    seed: int
    gradient_accumulation_steps: int
    def __init__(self, learning_rate: _Optional[float] = ..., schedule: _Optional[_Union[LearningRateSchedule, str]] = ..., warmup_steps: _Optional[int] = ..., batch_size: _Optional[int] = ..., sequence_length: _Optional[int] = ..., max_steps: _Optional[int] = ..., epochs: _Optional[int] = ..., gradient_clip_norm: _Optional[float] = ..., weight_decay: _Optional[float] = ..., seed: _Optional[int] = ..., gradient_accumulation_steps: _Optional[int] = ...) -> None: ...

class DistributedConfig(_message.Message):
    __slots__ = ("processes_per_node", "nodes", "strategy", "backend", "tensor_parallel_size", "pipeline_micro_batches", "pipeline_schedule")
    PROCESSES_PER_NODE_FIELD_NUMBER: _ClassVar[int]
    NODES_FIELD_NUMBER: _ClassVar[int]
    STRATEGY_FIELD_NUMBER: _ClassVar[int]
    BACKEND_FIELD_NUMBER: _ClassVar[int]
    TENSOR_PARALLEL_SIZE_FIELD_NUMBER: _ClassVar[int]
    PIPELINE_MICRO_BATCHES_FIELD_NUMBER: _ClassVar[int]
    PIPELINE_SCHEDULE_FIELD_NUMBER: _ClassVar[int]
    processes_per_node: int
    nodes: int
    strategy: DistributedStrategy
    backend: DistributedBackend
    tensor_parallel_size: int
    pipeline_micro_batches: int
    pipeline_schedule: PipelineSchedule
    def __init__(self, processes_per_node: _Optional[int] = ..., nodes: _Optional[int] = ..., strategy: _Optional[_Union[DistributedStrategy, str]] = ..., backend: _Optional[_Union[DistributedBackend, str]] = ..., tensor_parallel_size: _Optional[int] = ..., pipeline_micro_batches: _Optional[int] = ..., pipeline_schedule: _Optional[_Union[PipelineSchedule, str]] = ...) -> None: ...

class AlertPolicy(_message.Message):
    __slots__ = ("non_finite", "gradient_explosion", "explosion_factor", "divergence", "divergence_factor", "overfitting", "overfitting_patience", "gradient_norm_ceiling", "lr_reduction_factor", "alert_cooldown_steps")
    NON_FINITE_FIELD_NUMBER: _ClassVar[int]
    GRADIENT_EXPLOSION_FIELD_NUMBER: _ClassVar[int]
    EXPLOSION_FACTOR_FIELD_NUMBER: _ClassVar[int]
    DIVERGENCE_FIELD_NUMBER: _ClassVar[int]
    DIVERGENCE_FACTOR_FIELD_NUMBER: _ClassVar[int]
    OVERFITTING_FIELD_NUMBER: _ClassVar[int]
    OVERFITTING_PATIENCE_FIELD_NUMBER: _ClassVar[int]
    GRADIENT_NORM_CEILING_FIELD_NUMBER: _ClassVar[int]
    LR_REDUCTION_FACTOR_FIELD_NUMBER: _ClassVar[int]
    ALERT_COOLDOWN_STEPS_FIELD_NUMBER: _ClassVar[int]
    non_finite: AlertAction
    gradient_explosion: AlertAction
    explosion_factor: float
    divergence: AlertAction
    divergence_factor: float
    overfitting: AlertAction
    overfitting_patience: int
    gradient_norm_ceiling: float
    lr_reduction_factor: float
    alert_cooldown_steps: int
    def __init__(self, non_finite: _Optional[_Union[AlertAction, str]] = ..., gradient_explosion: _Optional[_Union[AlertAction, str]] = ..., explosion_factor: _Optional[float] = ..., divergence: _Optional[_Union[AlertAction, str]] = ..., divergence_factor: _Optional[float] = ..., overfitting: _Optional[_Union[AlertAction, str]] = ..., overfitting_patience: _Optional[int] = ..., gradient_norm_ceiling: _Optional[float] = ..., lr_reduction_factor: _Optional[float] = ..., alert_cooldown_steps: _Optional[int] = ...) -> None: ...

class RegistrationSpec(_message.Message):
    __slots__ = ("model_name", "canary_weight", "alias")
    MODEL_NAME_FIELD_NUMBER: _ClassVar[int]
    CANARY_WEIGHT_FIELD_NUMBER: _ClassVar[int]
    ALIAS_FIELD_NUMBER: _ClassVar[int]
    model_name: str
    canary_weight: int
    alias: str
    def __init__(self, model_name: _Optional[str] = ..., canary_weight: _Optional[int] = ..., alias: _Optional[str] = ...) -> None: ...

class JobSpec(_message.Message):
    __slots__ = ("family", "architecture", "base_model", "dataset_id", "hyperparameters", "distributed", "checkpoint_interval_steps", "eval_interval_steps", "early_stopping_patience", "alerts", "registration", "display_name", "max_validation_loss", "word_embedding", "classification_backbone", "initial_word_embeddings")
    FAMILY_FIELD_NUMBER: _ClassVar[int]
    ARCHITECTURE_FIELD_NUMBER: _ClassVar[int]
    BASE_MODEL_FIELD_NUMBER: _ClassVar[int]
    DATASET_ID_FIELD_NUMBER: _ClassVar[int]
    HYPERPARAMETERS_FIELD_NUMBER: _ClassVar[int]
    DISTRIBUTED_FIELD_NUMBER: _ClassVar[int]
    CHECKPOINT_INTERVAL_STEPS_FIELD_NUMBER: _ClassVar[int]
    EVAL_INTERVAL_STEPS_FIELD_NUMBER: _ClassVar[int]
    EARLY_STOPPING_PATIENCE_FIELD_NUMBER: _ClassVar[int]
    ALERTS_FIELD_NUMBER: _ClassVar[int]
    REGISTRATION_FIELD_NUMBER: _ClassVar[int]
    DISPLAY_NAME_FIELD_NUMBER: _ClassVar[int]
    MAX_VALIDATION_LOSS_FIELD_NUMBER: _ClassVar[int]
    WORD_EMBEDDING_FIELD_NUMBER: _ClassVar[int]
    CLASSIFICATION_BACKBONE_FIELD_NUMBER: _ClassVar[int]
    INITIAL_WORD_EMBEDDINGS_FIELD_NUMBER: _ClassVar[int]
    family: ModelFamily
    architecture: ModelArchitecture
    base_model: str
    dataset_id: str
    hyperparameters: Hyperparameters
    distributed: DistributedConfig
    checkpoint_interval_steps: int
    eval_interval_steps: int
    early_stopping_patience: int
    alerts: AlertPolicy
    registration: RegistrationSpec
    display_name: str
    max_validation_loss: float
    word_embedding: WordEmbeddingOptions
    classification_backbone: ClassificationBackbone
    initial_word_embeddings: str
    def __init__(self, family: _Optional[_Union[ModelFamily, str]] = ..., architecture: _Optional[_Union[ModelArchitecture, _Mapping]] = ..., base_model: _Optional[str] = ..., dataset_id: _Optional[str] = ..., hyperparameters: _Optional[_Union[Hyperparameters, _Mapping]] = ..., distributed: _Optional[_Union[DistributedConfig, _Mapping]] = ..., checkpoint_interval_steps: _Optional[int] = ..., eval_interval_steps: _Optional[int] = ..., early_stopping_patience: _Optional[int] = ..., alerts: _Optional[_Union[AlertPolicy, _Mapping]] = ..., registration: _Optional[_Union[RegistrationSpec, _Mapping]] = ..., display_name: _Optional[str] = ..., max_validation_loss: _Optional[float] = ..., word_embedding: _Optional[_Union[WordEmbeddingOptions, _Mapping]] = ..., classification_backbone: _Optional[_Union[ClassificationBackbone, str]] = ..., initial_word_embeddings: _Optional[str] = ...) -> None: ...

class TrainingMetrics(_message.Message):
    __slots__ = ("step", "epoch", "loss", "validation_loss", "validation_perplexity", "learning_rate", "gradient_norm", "tokens_per_second", "parameter_stats", "total_steps", "gpu_utilization", "gpu_memory_bytes")
    STEP_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    LOSS_FIELD_NUMBER: _ClassVar[int]
    VALIDATION_LOSS_FIELD_NUMBER: _ClassVar[int]
    VALIDATION_PERPLEXITY_FIELD_NUMBER: _ClassVar[int]
    LEARNING_RATE_FIELD_NUMBER: _ClassVar[int]
    GRADIENT_NORM_FIELD_NUMBER: _ClassVar[int]
    TOKENS_PER_SECOND_FIELD_NUMBER: _ClassVar[int]
    PARAMETER_STATS_FIELD_NUMBER: _ClassVar[int]
    TOTAL_STEPS_FIELD_NUMBER: _ClassVar[int]
    GPU_UTILIZATION_FIELD_NUMBER: _ClassVar[int]
    GPU_MEMORY_BYTES_FIELD_NUMBER: _ClassVar[int]
    step: int
    epoch: int
    loss: float
    validation_loss: float
    validation_perplexity: float
    learning_rate: float
    gradient_norm: float
    tokens_per_second: float
    parameter_stats: _containers.RepeatedCompositeFieldContainer[ParameterStats]
    total_steps: int
    gpu_utilization: float
    gpu_memory_bytes: int
    def __init__(self, step: _Optional[int] = ..., epoch: _Optional[int] = ..., loss: _Optional[float] = ..., validation_loss: _Optional[float] = ..., validation_perplexity: _Optional[float] = ..., learning_rate: _Optional[float] = ..., gradient_norm: _Optional[float] = ..., tokens_per_second: _Optional[float] = ..., parameter_stats: _Optional[_Iterable[_Union[ParameterStats, _Mapping]]] = ..., total_steps: _Optional[int] = ..., gpu_utilization: _Optional[float] = ..., gpu_memory_bytes: _Optional[int] = ...) -> None: ...

class ParameterStats(_message.Message):
    __slots__ = ("group", "weight_norm", "gradient_norm", "update_ratio", "histogram_edges", "histogram_counts")
    GROUP_FIELD_NUMBER: _ClassVar[int]
    WEIGHT_NORM_FIELD_NUMBER: _ClassVar[int]
    GRADIENT_NORM_FIELD_NUMBER: _ClassVar[int]
    UPDATE_RATIO_FIELD_NUMBER: _ClassVar[int]
    HISTOGRAM_EDGES_FIELD_NUMBER: _ClassVar[int]
    HISTOGRAM_COUNTS_FIELD_NUMBER: _ClassVar[int]
    group: str
    weight_norm: float
    gradient_norm: float
    update_ratio: float
    histogram_edges: _containers.RepeatedScalarFieldContainer[float]
    histogram_counts: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, group: _Optional[str] = ..., weight_norm: _Optional[float] = ..., gradient_norm: _Optional[float] = ..., update_ratio: _Optional[float] = ..., histogram_edges: _Optional[_Iterable[float]] = ..., histogram_counts: _Optional[_Iterable[int]] = ...) -> None: ...

class TrainingAlert(_message.Message):
    __slots__ = ("kind", "step", "message", "action", "cleared")
    KIND_FIELD_NUMBER: _ClassVar[int]
    STEP_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    ACTION_FIELD_NUMBER: _ClassVar[int]
    CLEARED_FIELD_NUMBER: _ClassVar[int]
    kind: AlertKind
    step: int
    message: str
    action: AlertAction
    cleared: bool
    def __init__(self, kind: _Optional[_Union[AlertKind, str]] = ..., step: _Optional[int] = ..., message: _Optional[str] = ..., action: _Optional[_Union[AlertAction, str]] = ..., cleared: _Optional[bool] = ...) -> None: ...

class Job(_message.Message):
    __slots__ = ("id", "spec", "state", "create_time", "start_time", "end_time", "latest_metrics", "alerts", "error", "attempts", "checkpoint_step", "registered_model", "registered_version", "tenant")
    ID_FIELD_NUMBER: _ClassVar[int]
    SPEC_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    START_TIME_FIELD_NUMBER: _ClassVar[int]
    END_TIME_FIELD_NUMBER: _ClassVar[int]
    LATEST_METRICS_FIELD_NUMBER: _ClassVar[int]
    ALERTS_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    ATTEMPTS_FIELD_NUMBER: _ClassVar[int]
    CHECKPOINT_STEP_FIELD_NUMBER: _ClassVar[int]
    REGISTERED_MODEL_FIELD_NUMBER: _ClassVar[int]
    REGISTERED_VERSION_FIELD_NUMBER: _ClassVar[int]
    TENANT_FIELD_NUMBER: _ClassVar[int]
    id: str
    spec: JobSpec
    state: JobState
    create_time: _timestamp_pb2.Timestamp
    start_time: _timestamp_pb2.Timestamp
    end_time: _timestamp_pb2.Timestamp
    latest_metrics: TrainingMetrics
    alerts: _containers.RepeatedCompositeFieldContainer[TrainingAlert]
    error: str
    attempts: int
    checkpoint_step: int
    registered_model: str
    registered_version: int
    tenant: str
    def __init__(self, id: _Optional[str] = ..., spec: _Optional[_Union[JobSpec, _Mapping]] = ..., state: _Optional[_Union[JobState, str]] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., start_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., end_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., latest_metrics: _Optional[_Union[TrainingMetrics, _Mapping]] = ..., alerts: _Optional[_Iterable[_Union[TrainingAlert, _Mapping]]] = ..., error: _Optional[str] = ..., attempts: _Optional[int] = ..., checkpoint_step: _Optional[int] = ..., registered_model: _Optional[str] = ..., registered_version: _Optional[int] = ..., tenant: _Optional[str] = ...) -> None: ...

class SubmitJobRequest(_message.Message):
    __slots__ = ("spec", "request_id")
    SPEC_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    spec: JobSpec
    request_id: str
    def __init__(self, spec: _Optional[_Union[JobSpec, _Mapping]] = ..., request_id: _Optional[str] = ...) -> None: ...

class SubmitJobResponse(_message.Message):
    __slots__ = ("job",)
    JOB_FIELD_NUMBER: _ClassVar[int]
    job: Job
    def __init__(self, job: _Optional[_Union[Job, _Mapping]] = ...) -> None: ...

class GetJobRequest(_message.Message):
    __slots__ = ("job_id",)
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    def __init__(self, job_id: _Optional[str] = ...) -> None: ...

class GetJobResponse(_message.Message):
    __slots__ = ("job",)
    JOB_FIELD_NUMBER: _ClassVar[int]
    job: Job
    def __init__(self, job: _Optional[_Union[Job, _Mapping]] = ...) -> None: ...

class ListJobsRequest(_message.Message):
    __slots__ = ("page_size", "page_token", "states")
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    STATES_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    states: _containers.RepeatedScalarFieldContainer[JobState]
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ..., states: _Optional[_Iterable[_Union[JobState, str]]] = ...) -> None: ...

class ListJobsResponse(_message.Message):
    __slots__ = ("jobs", "next_page_token")
    JOBS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    jobs: _containers.RepeatedCompositeFieldContainer[Job]
    next_page_token: str
    def __init__(self, jobs: _Optional[_Iterable[_Union[Job, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class CancelJobRequest(_message.Message):
    __slots__ = ("job_id",)
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    def __init__(self, job_id: _Optional[str] = ...) -> None: ...

class CancelJobResponse(_message.Message):
    __slots__ = ("job",)
    JOB_FIELD_NUMBER: _ClassVar[int]
    job: Job
    def __init__(self, job: _Optional[_Union[Job, _Mapping]] = ...) -> None: ...

class WatchJobRequest(_message.Message):
    __slots__ = ("job_id", "from_sequence")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    FROM_SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    from_sequence: int
    def __init__(self, job_id: _Optional[str] = ..., from_sequence: _Optional[int] = ...) -> None: ...

class WatchJobResponse(_message.Message):
    __slots__ = ("sequence", "time", "job", "metrics", "alert", "log")
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    TIME_FIELD_NUMBER: _ClassVar[int]
    JOB_FIELD_NUMBER: _ClassVar[int]
    METRICS_FIELD_NUMBER: _ClassVar[int]
    ALERT_FIELD_NUMBER: _ClassVar[int]
    LOG_FIELD_NUMBER: _ClassVar[int]
    sequence: int
    time: _timestamp_pb2.Timestamp
    job: Job
    metrics: TrainingMetrics
    alert: TrainingAlert
    log: str
    def __init__(self, sequence: _Optional[int] = ..., time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., job: _Optional[_Union[Job, _Mapping]] = ..., metrics: _Optional[_Union[TrainingMetrics, _Mapping]] = ..., alert: _Optional[_Union[TrainingAlert, _Mapping]] = ..., log: _Optional[str] = ...) -> None: ...

class UploadTarget(_message.Message):
    __slots__ = ("directory",)
    DIRECTORY_FIELD_NUMBER: _ClassVar[int]
    directory: str
    def __init__(self, directory: _Optional[str] = ...) -> None: ...

class SourceFileHeader(_message.Message):
    __slots__ = ("path", "size_bytes")
    PATH_FIELD_NUMBER: _ClassVar[int]
    SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    path: str
    size_bytes: int
    def __init__(self, path: _Optional[str] = ..., size_bytes: _Optional[int] = ...) -> None: ...

class UploadSourcesRequest(_message.Message):
    __slots__ = ("target", "file", "chunk")
    TARGET_FIELD_NUMBER: _ClassVar[int]
    FILE_FIELD_NUMBER: _ClassVar[int]
    CHUNK_FIELD_NUMBER: _ClassVar[int]
    target: UploadTarget
    file: SourceFileHeader
    chunk: bytes
    def __init__(self, target: _Optional[_Union[UploadTarget, _Mapping]] = ..., file: _Optional[_Union[SourceFileHeader, _Mapping]] = ..., chunk: _Optional[bytes] = ...) -> None: ...

class UploadSourcesResponse(_message.Message):
    __slots__ = ("directory", "files", "size_bytes")
    DIRECTORY_FIELD_NUMBER: _ClassVar[int]
    FILES_FIELD_NUMBER: _ClassVar[int]
    SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    directory: str
    files: int
    size_bytes: int
    def __init__(self, directory: _Optional[str] = ..., files: _Optional[int] = ..., size_bytes: _Optional[int] = ...) -> None: ...
