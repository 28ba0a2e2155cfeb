"""The task registry: one frozen `TaskSpec` per supported task.

A spec says everything the rest of BERTVision needs to know about a task
without touching its data: what kind of prediction it is, its label names and
how the labels are written in the files, which metrics are official, where the
files live locally, what TFDS calls it, and the exact TSV column layout GLUE
publishes for every split.

Example:

>>> from bertvision.data.tasks import get_task
>>> spec = get_task("mrpc")
>>> spec.kind, spec.num_labels, spec.main_metric
('classification', 2, 'f1')
>>> spec.splits["dev"]
'dev.tsv'
>>> spec.tsv_layouts["test"].columns
('index', '#1 ID', '#2 ID', '#1 String', '#2 String')
"""

from __future__ import annotations

import dataclasses
from typing import Literal, Mapping

from bertvision.config import TASK_KINDS
from bertvision.errors import ConfigError

TaskKind = Literal["classification", "multi_label", "regression", "span", "token_classification"]
LabelFormat = Literal["index", "name", "score", "none"]

USER_KINDS = ("classification", "multi_label", "regression", "token_classification")
"""Kinds a task made of a user's own files may have (`user_task`)."""
LABELLED_KINDS = ("classification", "multi_label", "token_classification")
"""Kinds whose labels are names out of `TaskSpec.label_names`."""
_LABEL_FORMATS = ("index", "name", "score", "none")

KIND_METRICS: dict[str, tuple[tuple[str, ...], str]] = {
    "classification": (("accuracy", "macro_f1", "micro_f1"), "accuracy"),
    "multi_label": (("micro_f1", "macro_f1", "subset_accuracy"), "micro_f1"),
    "regression": (("pearson", "spearmanr", "mse"), "pearson"),
    # entity-level, as conlleval counts them (`bertvision.metrics.tagging_metrics`, which adds per-type scores)
    "token_classification": (("f1", "precision", "recall", "strict_f1", "token_accuracy"), "f1"),
}
"""A user task's metrics and main metric by kind (`bertvision.metrics`)."""


_DEV_LABELS = {"dev": "dev"}


@dataclasses.dataclass(frozen=True)
class TsvLayout:
    """The column layout of one GLUE TSV file, as GLUE publishes it.

    Args:
        columns: every column of the file, in file order. For files with a
            header these are the header names; for header-less files (CoLA
            train/dev) they are descriptive names given here.
        has_header: whether the first line of the file is a header.
        text_columns: the column holding each of the task's `text_fields`,
            in the same order.
        label_column: the column holding the label, `None` for unlabelled
            (test) files.
        id_column: the column holding a stable example id (`index` or `id`),
            `None` when the file has none (ids then are `f"{split}-{row}"`).

    Example:

    >>> layout = TsvLayout(columns=("sentence", "label"), has_header=True,
    ...                    text_columns=("sentence",), label_column="label")
    >>> layout.required_columns
    ('sentence', 'label')
    """

    columns: tuple[str, ...]
    has_header: bool
    text_columns: tuple[str, ...]
    label_column: str | None = None
    id_column: str | None = None

    def __post_init__(self):
        for name in (*self.text_columns, self.label_column, self.id_column):
            if name is not None and name not in self.columns:
                raise ValueError(
                    f"TsvLayout: column {name!r} is not one of {self.columns}"
                )

    @property
    def required_columns(self) -> tuple[str, ...]:
        """Columns a file must have for the layout to be read."""
        names = (self.id_column, *self.text_columns, self.label_column)
        return tuple(n for n in names if n is not None)


@dataclasses.dataclass(frozen=True)
class TaskSpec:
    """Everything BERTVision knows about one task.

    Args:
        name: registry name, e.g. `"sst2"`, or a user task's name.
        kind: `"classification"`, `"multi_label"`, `"regression"` or `"span"`.
        label_names: class names in label-index order (empty for
            regression and span tasks).
        label_format: how labels are written in the local files:
            `"index"` (the class index, `0`/`1`), `"name"` (the class name,
            e.g. `entailment`), `"score"` (a float) or `"none"` (span tasks).
        text_fields: canonical names of the one or two text inputs (the TFDS
            feature names; SQuAD: `("question", "context")`).
        metrics: official metric names reported for the task.
        main_metric: the metric used to pick models; one of `metrics`.
        tfds_name: the TensorFlow Datasets name, e.g. `"glue/sst2"`.
        local_dir: the task's folder relative to a data root
            (e.g. `"glue/SST-2"`, `"squad2"`).
        splits: split name -> file name inside the task's local folder.
        tfds_splits: split name -> TFDS split name.
        eval_splits: splits that results are reported on.
        eval_split_labels: eval split -> short name used in reports
            (MNLI: `"matched"`/`"mismatched"`).
        tsv_layouts: split name -> `TsvLayout` (GLUE tasks only).
        submission_files: unlabelled split -> the file name GLUE's server
            expects for its predictions (``SST-2.tsv``; MNLI: ``MNLI-m.tsv``,
            ``MNLI-mm.tsv`` and the diagnostic ``AX.tsv``).
        submission_labels: how GLUE's server wants classes: ``"index"``
            (``0``/``1``) or ``"name"`` (label strings).
        text_columns: a user task's file columns holding the texts, in
            `text_fields` order (presets: empty; `TsvLayout` says it).
        label_column: a user task's file column this spec's labels come
            from: one head of a store that keeps several (presets: None).
        id_column: a user task's column of example ids (None: row numbers).
        file_options: how a user task's files are read (`format`, `header`,
            `encoding`, `label_separator`), so that ``predict --input`` reads
            another file of the same kind without repeating them.

    Example:

    >>> spec = get_task("mnli")
    >>> spec.eval_splits
    ('dev_matched', 'dev_mismatched')
    >>> spec.label_names
    ('entailment', 'neutral', 'contradiction')
    """

    name: str
    kind: TaskKind
    label_names: tuple[str, ...]
    label_format: LabelFormat
    text_fields: tuple[str, ...]
    metrics: tuple[str, ...]
    main_metric: str
    tfds_name: str = ""
    local_dir: str = ""
    splits: Mapping[str, str] = dataclasses.field(default_factory=dict)
    tfds_splits: Mapping[str, str] = dataclasses.field(default_factory=dict)
    eval_splits: tuple[str, ...] = ("dev",)
    eval_split_labels: Mapping[str, str] = dataclasses.field(default_factory=lambda: dict(_DEV_LABELS))
    tsv_layouts: Mapping[str, TsvLayout] = dataclasses.field(default_factory=dict)
    submission_files: Mapping[str, str] = dataclasses.field(default_factory=dict)
    submission_labels: Literal["index", "name"] = "index"
    text_columns: tuple[str, ...] = ()
    label_column: str | None = None
    id_column: str | None = None
    file_options: Mapping[str, object] = dataclasses.field(default_factory=dict)

    def __post_init__(self):
        where = f"TaskSpec {self.name!r}"
        if self.kind not in TASK_KINDS:
            raise ValueError(f"{where}: kind {self.kind!r} not in {TASK_KINDS}")
        if self.label_format not in _LABEL_FORMATS:
            raise ValueError(
                f"{where}: label_format {self.label_format!r} not in {_LABEL_FORMATS}"
            )
        if (self.kind in LABELLED_KINDS) != bool(self.label_names):
            raise ValueError(
                f"{where}: label_names must be given exactly for {' and '.join(LABELLED_KINDS)}"
            )
        if len(set(self.label_names)) != len(self.label_names):
            raise ValueError(f"{where}: label_names repeat a name")
        if self.text_columns and len(self.text_columns) != len(self.text_fields):
            raise ValueError(f"{where}: {len(self.text_columns)} text_columns for {len(self.text_fields)} text_fields")
        if not 1 <= len(self.text_fields) <= 2:
            raise ValueError(f"{where}: text_fields must hold one or two names")
        if self.main_metric not in self.metrics:
            raise ValueError(
                f"{where}: main_metric {self.main_metric!r} not in {self.metrics}"
            )
        for split in self.eval_splits:
            if self.splits and split not in self.splits:  # a user task names no files: its store has the splits
                raise ValueError(f"{where}: eval split {split!r} not in splits")
            if split not in self.eval_split_labels:
                raise ValueError(f"{where}: eval split {split!r} has no label")
        for split in self.tfds_splits:
            if split not in self.splits:
                raise ValueError(f"{where}: tfds split {split!r} not in splits")
        for split in self.submission_files:
            if split not in self.splits:
                raise ValueError(f"{where}: submission file for unknown split {split!r}")
        for split, layout in self.tsv_layouts.items():
            if split not in self.splits:
                raise ValueError(f"{where}: TSV layout for unknown split {split!r}")
            if len(layout.text_columns) != len(self.text_fields):
                raise ValueError(
                    f"{where}: layout of {split!r} has {len(layout.text_columns)} "
                    f"text columns for {len(self.text_fields)} text_fields"
                )

    def __hash__(self) -> int:
        return hash(self.name)

    @property
    def num_labels(self) -> int:
        """Number of model outputs: classes, 1 for regression, 2 for spans
        (start and end logits per token)."""
        if self.kind in LABELLED_KINDS:
            return len(self.label_names)
        if self.kind == "regression":
            return 1
        return 2

    @property
    def label_key(self) -> str:
        """The store record's feature holding this spec's labels: ``label``,
        or ``label/<column>`` for a user task's label column (a store keeps one
        per column named at extraction)."""
        return "label" if self.label_column is None else f"label/{self.label_column}"

    @property
    def is_preset(self) -> bool:
        """True for a registered benchmark task (`TASKS`) exactly as registered."""
        return TASKS.get(self.name) == self

    def to_dict(self) -> dict:
        """The spec as plain JSON values (a store's manifest and a run's
        results keep it); `from_dict` reads it back.

        >>> TaskSpec.from_dict(get_task("mrpc").to_dict()) == get_task("mrpc")
        True
        """
        out = dataclasses.asdict(self)
        for key, value in out.items():
            if isinstance(value, tuple):
                out[key] = list(value)
        out["tsv_layouts"] = {k: {**v, "columns": list(v["columns"]), "text_columns": list(v["text_columns"])}
                              for k, v in out["tsv_layouts"].items()}
        return out

    @classmethod
    def from_dict(cls, data: Mapping) -> "TaskSpec":
        """A spec from `to_dict`'s form; `ConfigError` naming what is wrong."""
        if not isinstance(data, Mapping):
            raise ConfigError(f"a task spec must be a JSON object, got {type(data).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"task spec {data.get('name')!r}: unknown field(s) {unknown}")
        values = dict(data)
        for key in ("label_names", "text_fields", "metrics", "eval_splits", "text_columns"):
            if key in values:
                values[key] = tuple(values[key])
        if "tsv_layouts" in values:
            values["tsv_layouts"] = {k: TsvLayout(**{**v, "columns": tuple(v["columns"]),
                                                     "text_columns": tuple(v["text_columns"])})
                                     for k, v in values["tsv_layouts"].items()}
        try:
            return cls(**values)
        except (TypeError, ValueError) as err:
            raise ConfigError(f"task spec {data.get('name')!r}: {err}") from None

    def for_label(self, label_column: str, kind: str, label_names: tuple = ()) -> "TaskSpec":
        """The spec of another label column of the same data (another head
        on the same store): same texts and splits, that column's kind, labels
        and metrics."""
        metrics, main = KIND_METRICS[kind]
        label_format = "score" if kind == "regression" else ("index" if self.label_format == "index" else "name")
        return dataclasses.replace(self, kind=kind, label_names=tuple(label_names), label_column=label_column,
                                   label_format=label_format, metrics=metrics, main_metric=main)


def user_task(name: str, kind: str, text_columns: tuple[str, ...], label_column: str,
              label_names: tuple[str, ...] = (), id_column: str | None = None, label_ids: bool = False,
              file_options: Mapping | None = None) -> TaskSpec:
    """A task made of a user's own files: its kind, columns and label names
    (the metrics follow the kind: `KIND_METRICS`; models are chosen on the
    ``dev`` split). `label_ids`: labels may be written as ids 0, 1, ... into
    `label_names` (``label_format="index"``; names are accepted too). The
    spec names no files: a store's manifest records those it was read from
    (``source``), so that a store can take another split later.

    >>> spec = user_task("banking77", "classification", ("text",), "category", ("card_arrival", "top_up"))
    >>> spec.main_metric, spec.label_key, spec.num_labels
    ('accuracy', 'label/category', 2)
    """
    if kind not in USER_KINDS:
        raise ConfigError(f"--kind must be one of {', '.join(USER_KINDS)}, got {kind!r}")
    if not 1 <= len(text_columns) <= 2:
        raise ConfigError("a task has one text column (--text-column) and at most one pair column "
                          "(--text-pair-column)")
    fields = ("text",) if len(text_columns) == 1 else ("text", "text_pair")
    metrics, main = KIND_METRICS[kind]
    try:
        return TaskSpec(name=name, kind=kind, label_names=tuple(label_names),
                        label_format="score" if kind == "regression" else ("index" if label_ids else "name"),
                        text_fields=fields, metrics=metrics, main_metric=main,
                        text_columns=tuple(text_columns), label_column=label_column, id_column=id_column,
                        file_options=dict(file_options or {}))
    except ValueError as err:
        raise ConfigError(str(err)) from None



# --------------------------------------------------------------------------
# GLUE layouts, column for column as the GLUE distribution publishes them.
# --------------------------------------------------------------------------

def _tsv(columns, text_columns, label_column=None, id_column=None, has_header=True) -> TsvLayout:
    return TsvLayout(columns=tuple(columns), has_header=has_header, text_columns=tuple(text_columns),
                     label_column=label_column, id_column=id_column)


def _glue(name: str, folder: str, kind: TaskKind, label_names: tuple, label_format: LabelFormat,
          text_fields: tuple, metrics: tuple, main_metric: str, labelled: TsvLayout, test: TsvLayout,
          submission_labels: str = "index") -> TaskSpec:
    """A GLUE task with the standard train/dev/test files (MNLI is written out in full)."""
    return TaskSpec(
        submission_files={"test": f"{folder}.tsv"}, submission_labels=submission_labels,
        name=name, kind=kind, label_names=label_names, label_format=label_format, text_fields=text_fields,
        metrics=metrics, main_metric=main_metric, tfds_name=f"glue/{name}", local_dir=f"glue/{folder}",
        splits={"train": "train.tsv", "dev": "dev.tsv", "test": "test.tsv"},
        tfds_splits={"train": "train", "dev": "validation", "test": "test"},
        eval_splits=("dev",), eval_split_labels=_DEV_LABELS,
        tsv_layouts={"train": labelled, "dev": labelled, "test": test})


_S1_S2 = ("sentence1", "sentence2")
_MNLI_PREFIX = ("index", "promptID", "pairID", "genre", "sentence1_binary_parse", "sentence2_binary_parse",
                "sentence1_parse", "sentence2_parse", "sentence1", "sentence2")
_MNLI_TRAIN = _tsv(_MNLI_PREFIX + ("label1", "gold_label"), _S1_S2, "gold_label", "index")
_MNLI_DEV = _tsv(_MNLI_PREFIX + ("label1", "label2", "label3", "label4", "label5", "gold_label"), _S1_S2,
                 "gold_label", "index")
_MNLI_TEST = _tsv(_MNLI_PREFIX, _S1_S2, id_column="index")
_STSB_COLUMNS = ("index", "genre", "filename", "year", "old_index", "source1", "source2", "sentence1", "sentence2")
_MRPC_TEXTS = ("#1 String", "#2 String")
_SQUAD_METRICS = ("exact", "f1", "HasAns_exact", "HasAns_f1", "NoAns_exact", "NoAns_f1", "best_exact", "best_f1")


def _specs() -> dict[str, TaskSpec]:
    specs = [
        TaskSpec(
            name="squad_v2", kind="span", label_names=(), label_format="none", text_fields=("question", "context"),
            metrics=_SQUAD_METRICS, main_metric="f1", tfds_name="squad/v2.0", local_dir="squad2",
            splits={"train": "train-v2.0.json", "dev": "dev-v2.0.json"},
            tfds_splits={"train": "train", "dev": "validation"}, eval_splits=("dev",),
            eval_split_labels=_DEV_LABELS,
        ),
        # CoLA train/dev are the only GLUE files without a header.
        _glue("cola", "CoLA", "classification", ("unacceptable", "acceptable"), "index", ("sentence",),
              ("matthews_corrcoef",), "matthews_corrcoef",
              _tsv(("source", "label", "original_label", "sentence"), ("sentence",), "label", has_header=False),
              _tsv(("index", "sentence"), ("sentence",), id_column="index")),
        _glue("sst2", "SST-2", "classification", ("negative", "positive"), "index", ("sentence",), ("accuracy",),
              "accuracy", _tsv(("sentence", "label"), ("sentence",), "label"),
              _tsv(("index", "sentence"), ("sentence",), id_column="index")),
        _glue("mrpc", "MRPC", "classification", ("not_equivalent", "equivalent"), "index", _S1_S2,
              ("accuracy", "f1"), "f1", _tsv(("Quality", "#1 ID", "#2 ID") + _MRPC_TEXTS, _MRPC_TEXTS, "Quality"),
              _tsv(("index", "#1 ID", "#2 ID") + _MRPC_TEXTS, _MRPC_TEXTS, id_column="index")),
        _glue("stsb", "STS-B", "regression", (), "score", _S1_S2, ("pearson", "spearmanr"), "pearson",
              _tsv(_STSB_COLUMNS + ("score",), _S1_S2, "score", "index"), _tsv(_STSB_COLUMNS, _S1_S2, id_column="index")),
        _glue("qqp", "QQP", "classification", ("not_duplicate", "duplicate"), "index", ("question1", "question2"),
              ("accuracy", "f1"), "f1",
              _tsv(("id", "qid1", "qid2", "question1", "question2", "is_duplicate"), ("question1", "question2"),
                   "is_duplicate", "id"),
              _tsv(("id", "question1", "question2"), ("question1", "question2"), id_column="id")),
        TaskSpec(
            name="mnli", kind="classification", label_names=("entailment", "neutral", "contradiction"),
            label_format="name", text_fields=("premise", "hypothesis"), metrics=("accuracy",), main_metric="accuracy",
            tfds_name="glue/mnli", local_dir="glue/MNLI",
            # ax: GLUE's diagnostic set (glue_data/diagnostic/diagnostic.tsv), predicted by an MNLI model
            splits={"train": "train.tsv", "dev_matched": "dev_matched.tsv", "dev_mismatched": "dev_mismatched.tsv",
                    "test_matched": "test_matched.tsv", "test_mismatched": "test_mismatched.tsv",
                    "ax": "diagnostic.tsv"},
            tfds_splits={"train": "train", "dev_matched": "validation_matched",
                         "dev_mismatched": "validation_mismatched", "test_matched": "test_matched",
                         "test_mismatched": "test_mismatched"},
            eval_splits=("dev_matched", "dev_mismatched"),
            eval_split_labels={"dev_matched": "matched", "dev_mismatched": "mismatched"},
            tsv_layouts={"train": _MNLI_TRAIN, "dev_matched": _MNLI_DEV, "dev_mismatched": _MNLI_DEV,
                         "test_matched": _MNLI_TEST, "test_mismatched": _MNLI_TEST,
                         "ax": _tsv(("index",) + _S1_S2, _S1_S2, id_column="index")},
            submission_files={"test_matched": "MNLI-m.tsv", "test_mismatched": "MNLI-mm.tsv", "ax": "AX.tsv"},
            submission_labels="name",
        ),
        _glue("qnli", "QNLI", "classification", ("entailment", "not_entailment"), "name", ("question", "sentence"),
              ("accuracy",), "accuracy",
              _tsv(("index", "question", "sentence", "label"), ("question", "sentence"), "label", "index"),
              _tsv(("index", "question", "sentence"), ("question", "sentence"), id_column="index"), "name"),
    ]
    for name, label_names, label_format in (("rte", ("entailment", "not_entailment"), "name"),
                                            ("wnli", ("not_entailment", "entailment"), "index")):
        specs.append(_glue(name, name.upper(), "classification", label_names, label_format, _S1_S2, ("accuracy",),
                           "accuracy", _tsv(("index",) + _S1_S2 + ("label",), _S1_S2, "label", "index"),
                           _tsv(("index",) + _S1_S2, _S1_S2, id_column="index"), label_format))
    return {spec.name: spec for spec in specs}


TASKS: dict[str, TaskSpec] = _specs()
"""Registry name -> `TaskSpec` for every supported task."""


def get_task(name: str | TaskSpec | Mapping) -> TaskSpec:
    """Return the `TaskSpec` registered as `name` (a spec is returned as is,
    a spec's `TaskSpec.to_dict` form is read back).

    Raises:
        ConfigError: naming the known tasks when `name` is not registered.

    Example:

    >>> get_task("sst2").label_names
    ('negative', 'positive')
    """
    if isinstance(name, TaskSpec):
        return name
    if isinstance(name, Mapping):
        return TaskSpec.from_dict(name)
    try:
        return TASKS[name]
    except (KeyError, TypeError):
        raise ConfigError(
            f"Unknown task {name!r}; known tasks: {', '.join(TASKS)}"
        ) from None
