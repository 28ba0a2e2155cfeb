"""Loading task examples from local files (GLUE TSVs, SQuAD 2.0 JSON) or TFDS.

Local GLUE files are read exactly as GLUE publishes them: lines split on tab,
no quote processing (a `"` is an ordinary character), UTF-8 with an optional
byte-order mark. Anything that cannot be read is either a counted skip,
reported in `LoadResult.skipped` with `file:line` and a reason, or a
`DataError` naming the file, line and field.

Example:

>>> from bertvision.data.readers import load_examples
>>> result = load_examples("sst2", "dev", DATA / "glue" / "SST-2")   # DATA: ../shared/data
>>> len(result.examples), result.examples[0].label
(872, 1)
>>> squad = load_examples("squad_v2", "dev-v2.0.Rhine", DATA / "squad2")
>>> squad.examples[0].texts[0]  # (question, context)
'Where does the Rhine empty?'
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from pathlib import Path
from typing import Iterator

import numpy as np

from bertvision.errors import BertVisionError, DataError
from bertvision.extras import import_extra
from bertvision.data.tasks import TaskSpec, TsvLayout, get_task

DATA_DIR_ENV = "BERTVISION_DATA_DIR"
"""Environment variable naming the default data root (holding `glue/`, `squad2/`)."""


@dataclasses.dataclass(frozen=True)
class Answer:
    """One gold answer span of a SQuAD question.

    Args:
        text: the answer text.
        start: character offset of the answer in the context.

    Example:

    >>> answer = Answer("Rhine", 4)
    >>> answer.end
    9
    """

    text: str
    start: int

    @property
    def end(self) -> int:
        """Character offset one past the answer's end in the context."""
        return self.start + len(self.text)


@dataclasses.dataclass(frozen=True)
class Example:
    """One task example.

    Args:
        uid: stable id (GLUE: the TSV `index`/`id` or `f"{split}-{row}"`;
            SQuAD: the question id).
        texts: one or two texts; SQuAD: `(question, context)`.
        label: int class index, float score for regression, `None` when the
            split has no labels (and for span tasks).
        answers: SQuAD gold answers (empty for impossible questions).
        is_impossible: SQuAD 2.0 unanswerable question.
        words: token classification: the sentence's words (``texts`` is
            then the one text they make, joined by spaces, or the raw text
            they were split from).
        tags: token classification: one BIO tag per word (empty when the
            split has no tags).
        labels: a user task's labels by label column (`bertvision.data.files`;
            `label` is the first column's): a class index, a score, or a
            multi-label 0/1 list. None for benchmark tasks.

    Example:

    >>> Example(uid="dev-0", texts=("a fine film",), label=1)
    Example(uid='dev-0', texts=('a fine film',), label=1, answers=(), is_impossible=False, words=(), tags=(), labels=None)
    """

    uid: str
    texts: tuple[str, ...]
    label: int | float | list | None = None
    answers: tuple[Answer, ...] = ()
    is_impossible: bool = False
    words: tuple[str, ...] = ()
    tags: tuple[str, ...] = ()
    labels: dict | None = None


@dataclasses.dataclass
class LoadResult:
    """What `load_examples` read.

    Args:
        examples: the examples, in file order.
        skipped: `(where, reason)` for every record that was skipped;
            `where` is `file:line` for TSVs and `file:qa-id` for SQuAD.
        task: the task name.
        split: the split name as requested.
        source: the file read, or `tfds:<name>[<split>]`.
    """

    examples: list[Example]
    skipped: list[tuple[str, str]]
    task: str
    split: str
    source: str

    def __len__(self) -> int:
        return len(self.examples)

    def check_skipped(self, max_share: float | None) -> "LoadResult":
        """Raise `DataError` when more than `max_share` of the split's records
        were skipped (``None``: any share is allowed); returns self.

        >>> len(load_examples("sst2", "dev", DATA / "glue" / "SST-2").check_skipped(0.01).examples)
        872
        """
        total = len(self.examples) + len(self.skipped)
        if max_share is not None and total and len(self.skipped) / total > max_share:
            raise DataError(f"{self.task}/{self.split}: {len(self.skipped)} of {total} records skipped "
                            f"({len(self.skipped) / total:.1%} > --max-skipped {max_share:g}), e.g. "
                            + "; ".join(f"{w}: {r}" for w, r in self.skipped[:3])
                            + "; fix the file or raise --max-skipped")
        return self

    def skipped_report(self, first: int = 3) -> str:
        """A few lines for the console: how many records were skipped and the first reasons ("" if none)."""
        if not self.skipped:
            return ""
        lines = [f"{self.task}/{self.split}: skipped {len(self.skipped)} of "
                 f"{len(self.examples) + len(self.skipped)} records in {self.source}:"]
        lines += [f"  {where}: {reason}" for where, reason in self.skipped[:first]]
        if len(self.skipped) > first:
            lines.append(f"  ... and {len(self.skipped) - first} more")
        return "\n".join(lines)

    def summary(self) -> str:
        """One line: how many examples were read and skipped, from where."""
        return (
            f"{self.task}/{self.split}: {len(self.examples)} examples, "
            f"{len(self.skipped)} skipped, from {self.source}"
        )


def load_examples(
    task: str | TaskSpec,
    split: str,
    data_dir: str | os.PathLike | None = None,
    *,
    use_tfds: bool = False,
    limit: int | None = None,
) -> LoadResult:
    """Load the examples of one split of a task.

    Args:
        task: a registered task name or a `TaskSpec`.
        split: a split name of the task (`train`, `dev`, `test`; MNLI:
            `dev_matched`, `dev_mismatched`, `test_matched`,
            `test_mismatched`). For SQuAD a name `X` also resolves to the file
            `X.json` in `data_dir` (e.g. `"dev-v2.0.Rhine"`). `A+B` is the
            examples of `A` followed by those of `B` (e.g.
            `"train+dev-v2.0.Normans_CCT"`: more unanswerable questions to
            train on); their uids must not collide.
        data_dir: local folder holding the task's files (for GLUE the task
            folder such as `glue/SST-2`; for SQuAD the folder holding
            `train-v2.0.json`/`dev-v2.0.json`). A data root holding the
            task's folder (`glue/SST-2`, `squad2`) is accepted too. Defaults to
            `$BERTVISION_DATA_DIR`, else `<repo>/../shared/data`. With
            `use_tfds`, it is passed to TFDS as its data dir.
        use_tfds: read the task from TensorFlow Datasets instead of local files.
        limit: keep only the first `limit` examples.

    Returns:
        A `LoadResult`.

    Raises:
        DataError: missing file, unknown split, bad header, unknown label,
            malformed JSON.
    """
    spec = get_task(task)
    if limit is not None and limit < 0:
        raise ValueError(f"limit must be >= 0 or None, got {limit}")
    if "+" in split:
        return _load_joined(spec, split, data_dir, use_tfds, limit)
    if use_tfds:
        if split not in spec.tfds_splits:
            raise DataError(
                f"Task {spec.name!r} has no TFDS split {split!r}; "
                f"known splits: {', '.join(spec.tfds_splits)}"
            )
        return _load_tfds(spec, split, data_dir, limit)
    path = resolve_path(spec, split, data_dir)
    if spec.kind == "span":
        examples, skipped = _read_squad(path, limit)
    else:
        examples, skipped = _read_glue_tsv(spec, split, path, limit)
    return LoadResult(examples, skipped, spec.name, split, str(path))


def _load_joined(spec: TaskSpec, split: str, data_dir, use_tfds: bool, limit: int | None) -> LoadResult:
    parts = split.split("+")
    if not all(parts) or len(set(parts)) != len(parts):
        raise DataError(f"split {split!r}: give distinct split names joined by '+' (e.g. 'train+dev')")
    examples, skipped, sources, seen = [], [], [], {}
    for part in parts:
        loaded = load_examples(spec, part, data_dir, use_tfds=use_tfds)
        for example in loaded.examples:
            if example.uid in seen:
                raise DataError(f"split {split!r}: uid {example.uid!r} is in both {seen[example.uid]!r} and "
                                f"{part!r}; splits joined with '+' need distinct uids")
            seen[example.uid] = part
        examples += loaded.examples
        skipped += loaded.skipped
        sources.append(loaded.source)
    if limit is not None:
        examples = examples[:limit]
    return LoadResult(examples, skipped, spec.name, split, "+".join(sources))


def default_data_root() -> Path:
    """`$BERTVISION_DATA_DIR`, else `<repo>/../shared/data`."""
    env = os.environ.get(DATA_DIR_ENV)
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[3] / "shared" / "data"


def resolve_path(
    spec: TaskSpec, split: str, data_dir: str | os.PathLike | None = None
) -> Path:
    """The local file holding `split` of `spec`.

    Raises:
        DataError: unknown split, or the file does not exist (naming the path
            looked at and the expected file name).
    """
    folder = Path(data_dir) if data_dir is not None else default_data_root()
    if split in spec.splits:
        file_name = spec.splits[split]
    elif spec.kind == "span" and split and "/" not in split and "\\" not in split:
        file_name = f"{split}.json"
        if not _candidates(folder, spec, file_name):
            raise DataError(
                f"Task {spec.name!r} has no split {split!r} and no file "
                f"{file_name!r} in {folder}; known splits: {', '.join(spec.splits)}"
            )
    else:
        raise DataError(
            f"Task {spec.name!r} has no split {split!r}; "
            f"known splits: {', '.join(spec.splits)}"
        )
    found = _candidates(folder, spec, file_name)
    if found:
        return found[0]
    raise DataError(
        f"Missing data file for task {spec.name!r}, split {split!r}: expected "
        f"{file_name!r} in {folder} (or in {folder / spec.local_dir})"
    )


def _candidates(folder: Path, spec: TaskSpec, file_name: str) -> list[Path]:
    paths = (folder / file_name, folder / spec.local_dir / file_name)
    return [p for p in paths if p.is_file()]


# --------------------------------------------------------------------------
# GLUE TSV
# --------------------------------------------------------------------------


def decode_utf8(data: bytes, path: str | os.PathLike, error: type[BertVisionError] = DataError) -> str:
    """`data` (the bytes of the file `path`) as text, a UTF-8 byte-order mark
    dropped; bytes that are not UTF-8 (a binary file, another encoding) raise
    `error` naming the file and line: ``PATH:LINE: not valid UTF-8 (...)``.

    >>> decode_utf8(b"a\\n\\xff", "x.txt")
    Traceback (most recent call last):
    bertvision.errors.DataError: x.txt:2: not valid UTF-8 (invalid start byte); save it as UTF-8 text
    """
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = data[: err.start].count(b"\n") + 1
        raise error(f"{path}:{line}: not valid UTF-8 ({err.reason}); save it as UTF-8 text") from None


def _tsv_lines(path: Path) -> Iterator[tuple[int, str]]:
    """`(line_number, line)` for each line, split on `\\n` only, `\\r` stripped."""
    text = decode_utf8(path.read_bytes(), path)
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    for number, line in enumerate(lines, start=1):
        yield number, line[:-1] if line.endswith("\r") else line


def _read_glue_tsv(
    spec: TaskSpec, split: str, path: Path, limit: int | None
) -> tuple[list[Example], list[tuple[str, str]]]:
    layout = spec.tsv_layouts[split]
    lines = _tsv_lines(path)
    columns = _read_header(spec, layout, path, lines)
    index = {name: i for i, name in enumerate(columns)}
    text_idx = [index[c] for c in layout.text_columns]
    label_idx = index[layout.label_column] if layout.label_column else None
    id_idx = index[layout.id_column] if layout.id_column else None

    examples: list[Example] = []
    skipped: list[tuple[str, str]] = []
    row_number = -1
    for line_number, line in lines:
        if limit is not None and len(examples) >= limit:
            break
        row_number += 1
        where = f"{path}:{line_number}"
        fields = line.split("\t")
        if len(fields) != len(columns):
            what = "too few" if len(fields) < len(columns) else "too many"
            skipped.append(
                (
                    where,
                    f"{what} columns: {len(fields)} tab-separated fields, "
                    f"expected {len(columns)} ({', '.join(columns)})",
                )
            )
            continue
        texts = tuple(fields[i] for i in text_idx)
        empty = [c for c, t in zip(layout.text_columns, texts) if not t.strip()]
        if empty:
            skipped.append((where, f"empty text in column {empty[0]!r}"))
            continue
        label = None
        if label_idx is not None:
            label = _parse_label(spec, fields[label_idx], where, layout.label_column)
        if id_idx is not None:
            uid = fields[id_idx].strip()
            if not uid:
                skipped.append((where, f"empty id in column {layout.id_column!r}"))
                continue
        else:
            uid = f"{split}-{row_number}"
        examples.append(Example(uid=uid, texts=texts, label=label))
    return examples, skipped


def _read_header(
    spec: TaskSpec, layout: TsvLayout, path: Path, lines: Iterator[tuple[int, str]]
) -> tuple[str, ...]:
    if not layout.has_header:
        return layout.columns
    first = next(lines, None)
    if first is None:
        raise DataError(
            f"{path}: empty file; expected a header with columns "
            f"{', '.join(layout.columns)}"
        )
    columns = tuple(c.strip() for c in first[1].split("\t"))
    missing = [c for c in layout.required_columns if c not in columns]
    if missing:
        raise DataError(
            f"{path}:1: header is missing required column(s) "
            f"{', '.join(repr(c) for c in missing)} for task {spec.name!r}; "
            f"found {list(columns)}, expected {list(layout.columns)}"
        )
    duplicated = sorted({c for c in columns if columns.count(c) > 1})
    if duplicated:
        raise DataError(f"{path}:1: header repeats column(s) {duplicated}")
    return columns


def _parse_label(spec: TaskSpec, value: str, where: str, column: str) -> int | float:
    raw = value.strip()
    if spec.label_format == "score":
        try:
            score = float(raw)
        except ValueError:
            score = math.nan
        if not math.isfinite(score):
            raise DataError(
                f"{where}: column {column!r}: bad score {value!r} for task "
                f"{spec.name!r}; expected a number"
            )
        return score
    if spec.label_format == "name":
        if raw in spec.label_names:
            return spec.label_names.index(raw)
        expected = ", ".join(spec.label_names)
    else:
        valid = [str(i) for i in range(len(spec.label_names))]
        if raw in valid:
            return int(raw)
        expected = ", ".join(valid)
    raise DataError(
        f"{where}: column {column!r}: unknown label {value!r} for task "
        f"{spec.name!r}; expected one of {expected}"
    )


# --------------------------------------------------------------------------
# SQuAD 2.0 JSON
# --------------------------------------------------------------------------


def _read_squad(
    path: Path, limit: int | None
) -> tuple[list[Example], list[tuple[str, str]]]:
    try:
        dataset = json.loads(decode_utf8(path.read_bytes(), path))
    except json.JSONDecodeError as err:
        raise DataError(
            f"{path}:{err.lineno}:{err.colno}: not a SQuAD JSON file ({err.msg})"
        ) from None
    articles = _field(dataset, "data", list, path, "")
    examples: list[Example] = []
    skipped: list[tuple[str, str]] = []
    for a, article in enumerate(articles):
        at = f"data[{a}]"
        paragraphs = _field(article, "paragraphs", list, path, at)
        for p, paragraph in enumerate(paragraphs):
            pat = f"{at}.paragraphs[{p}]"
            context = _field(paragraph, "context", str, path, pat)
            for q, qa in enumerate(_field(paragraph, "qas", list, path, pat)):
                if limit is not None and len(examples) >= limit:
                    return examples, skipped
                example = _squad_example(qa, context, path, f"{pat}.qas[{q}]", skipped)
                if example is not None:
                    examples.append(example)
    return examples, skipped


def _field(obj, key: str, kind: type, path: Path, at: str):
    where = f"{path}: {at or 'top level'}"
    if not isinstance(obj, dict):
        raise DataError(f"{where}: expected a JSON object, got {type(obj).__name__}")
    if key not in obj:
        raise DataError(f"{where}: missing field {key!r}")
    value = obj[key]
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise DataError(
            f"{where}.{key}: expected {kind.__name__}, got {type(value).__name__}"
        )
    return value


def _squad_example(
    qa, context: str, path: Path, at: str, skipped: list[tuple[str, str]]
) -> Example | None:
    uid = _field(qa, "id", str, path, at)
    question = _field(qa, "question", str, path, at)
    raw_answers = _field(qa, "answers", list, path, at) if "answers" in qa else []
    # SQuAD 1.1 files (and some converted ones) have no is_impossible: a
    # question is then unanswerable exactly when it has no answers
    is_impossible = (
        _field(qa, "is_impossible", bool, path, at) if "is_impossible" in qa else not raw_answers
    )
    where = f"{path}:{uid}"
    if not question.strip():
        skipped.append((where, "empty question"))
        return None
    if not context.strip():
        skipped.append((where, "empty context"))
        return None
    if is_impossible:
        if raw_answers:
            skipped.append(
                (where, f"is_impossible is true but {len(raw_answers)} answers given")
            )
            return None
        return Example(uid=uid, texts=(question, context), is_impossible=True)
    answers = []
    for i, raw in enumerate(raw_answers):
        aat = f"{at}.answers[{i}]"
        text = _field(raw, "text", str, path, aat)
        start = _field(raw, "answer_start", int, path, aat)
        found = context[start : start + len(text)] if start >= 0 else None
        if not text.strip():
            skipped.append((where, f"answer {i} dropped: empty answer text"))
        elif found != text:
            skipped.append(
                (
                    where,
                    f"answer {i} dropped: context[{start}:{start + len(text)}] is "
                    f"{found!r}, not the answer text {text!r}",
                )
            )
        else:
            answers.append(Answer(text=text, start=start))
    if not answers:
        reason = (
            "answerable question has no answers"
            if not raw_answers
            else "answerable question skipped: none of its answers matches the context"
        )
        skipped.append((where, reason))
        return None
    return Example(uid=uid, texts=(question, context), answers=tuple(answers))


# --------------------------------------------------------------------------
# TensorFlow Datasets
# --------------------------------------------------------------------------


def _load_tfds(
    spec: TaskSpec, split: str, data_dir, limit: int | None
) -> LoadResult:
    tfds_split = spec.tfds_splits[split]
    if limit is not None:
        tfds_split = f"{tfds_split}[:{limit}]"
    source = f"tfds:{spec.tfds_name}[{tfds_split}]"
    if limit == 0:
        return LoadResult([], [], spec.name, split, source)
    tfds = import_extra("tensorflow_datasets", "tfds", "--tfds (reading a task from tensorflow-datasets)")
    try:
        # Never downloads: the dataset must already be prepared in data_dir
        # (or TFDS's default data dir), e.g. with `tfds build` on a machine
        # with network access.
        dataset = tfds.load(
            spec.tfds_name,
            split=tfds_split,
            data_dir=None if data_dir is None else str(data_dir),
            download=False,
            shuffle_files=False,
        )
    except Exception as err:  # TFDS raises several types for "not prepared"
        raise DataError(
            f"Cannot load {source} from TFDS data dir "
            f"{data_dir or '(TFDS default)'}: {err}. Prepare it first "
            f"(tfds build {spec.tfds_name}) or load the local files."
        ) from err
    examples: list[Example] = []
    skipped: list[tuple[str, str]] = []
    for record in tfds.as_numpy(dataset):
        example = _tfds_example(spec, split, record, source, skipped)
        if example is not None:
            examples.append(example)
    return LoadResult(examples, skipped, spec.name, split, source)


def _text(value) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def _tfds_example(
    spec: TaskSpec, split: str, record: dict, source: str, skipped
) -> Example | None:
    if spec.kind == "span":
        uid = _text(record["id"])
        question, context = _text(record["question"]), _text(record["context"])
        if bool(record["is_impossible"]):
            return Example(uid=uid, texts=(question, context), is_impossible=True)
        answers = []
        for i, (text, start) in enumerate(
            zip(record["answers"]["text"], record["answers"]["answer_start"])
        ):
            text, start = _text(text), int(start)
            if context[start : start + len(text)] == text and text.strip():
                answers.append(Answer(text=text, start=start))
            else:
                skipped.append(
                    (f"{source}:{uid}", f"answer {i} dropped: not at {start} in context")
                )
        if not answers:
            skipped.append((f"{source}:{uid}", "answerable question has no answers"))
            return None
        return Example(uid=uid, texts=(question, context), answers=tuple(answers))

    idx = int(record["idx"])
    texts = tuple(_text(record[field]) for field in spec.text_fields)
    where = f"{source}:idx={idx}"
    empty = [f for f, t in zip(spec.text_fields, texts) if not t.strip()]
    if empty:
        skipped.append((where, f"empty text in feature {empty[0]!r}"))
        return None
    label: int | float | None
    if spec.kind == "regression":
        label = float(record["label"])
        if split.startswith("test"):
            label = None
    else:
        label = int(record["label"])
        if label == -1:
            label = None
        elif not 0 <= label < spec.num_labels:
            raise DataError(f"{where}: label {label} out of range for {spec.name!r}")
    # TFDS `idx` is the row number in the GLUE file: for files with an index
    # column it equals the local uid, otherwise the local uid is split-row.
    layout = spec.tsv_layouts.get(split)
    uid = str(idx) if layout is not None and layout.id_column == "index" else f"{split}-{idx}"
    return Example(uid=uid, texts=texts, label=label)


def seeded_subset(items: list, n: int, seed: int = 0) -> list:
    """`n` items drawn at random (seeded), kept in their original order: the
    draw of ``pipelines.extract --sample n --seed seed`` and of
    ``pipelines.finetune --sample n --seed seed``.

    >>> seeded_subset(list(range(10)), 3, seed=0)  # three of 0..9, ascending
    [5, 6, 9]
    """
    if not 0 < n <= len(items):
        raise DataError(f"cannot sample {n} of {len(items)} examples")
    keep = np.sort(np.random.default_rng(seed).choice(len(items), size=n, replace=False))
    return [items[i] for i in keep]
