"""A user's own files as a task: CSV, TSV, JSONL or Parquet, any columns and labels.

`DataSource` says which files and columns make the task (what
``pipelines.extract --text-column ... --label-column ...`` or a
``--task-file task.json`` gives); `read_source` reads every split, resolves
the label names on the training file, checks the other splits against them
and returns one `TaskSpec` per label column (the heads a store keeps) with
each split's `LoadResult`.

Reading is pyarrow's (CSV/TSV: `pyarrow.csv`, quoted fields with embedded
newlines; Parquet: `pyarrow.parquet`) and the standard `json` module (JSONL,
one object per line). Files are decoded first with ``encoding`` (UTF-8 by
default; a byte-order mark is dropped; CRLF line ends are fine), so a bad byte
is reported with its line. CSV fields use double-quote quoting; TSV fields
none (a ``"`` is an ordinary character, as in GLUE and GoEmotions).

Rows are numbered as a spreadsheet shows them: the header is row 1 and the
first record row 2 (a file without a header starts at row 1; a quoted field
with newlines is still one row); JSONL rows are its lines. Every malformed input is a `DataError` naming file, row and
column. A row with the wrong number of fields is skipped and counted
(`LoadResult.skipped`, capped by ``--max-skipped``); an empty text, an empty
or unknown label and a non-numeric score are refused.

Example:

>>> source = DataSource(splits={"train": "train.csv", "test": "test.csv"}, text_column="text",
...                     label_columns=["category"], dev_fraction=0.1, data_dir=str(DATA / "banking77"))
>>> data = read_source(source)
>>> data.spec.label_names[:2], list(data.splits), len(data.splits["dev"].examples)
(('Refund_not_showing_up', 'activate_my_card'), ['train', 'dev', 'test'], 1000)
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq
from sklearn.model_selection import train_test_split

from bertvision.config import FILE_FORMATS, TAG_SCHEMES, ConfigBase, check_choice, check_fraction
from bertvision.data.conll import INTERNAL_SCHEME, bio_label_names, entity_types, jsonl_keys, read_tagged
from bertvision.data.readers import Example, LoadResult
from bertvision.data.tasks import USER_KINDS, TaskSpec, user_task
from bertvision.errors import ConfigError, DataError

__all__ = ["FORMATS", "DataSource", "Table", "UserData", "find_split_files", "parse_split_args", "read_source",
           "read_table"]

FORMATS = FILE_FORMATS
TAGGED_FORMATS = ("conll", "jsonl")  # token classification: CoNLL column files, {"tokens", "tags"} JSONL
_SUFFIXES = {".csv": "csv", ".tsv": "tsv", ".txt": "tsv", ".jsonl": "jsonl", ".ndjson": "jsonl",
             ".parquet": "parquet", ".pq": "parquet"}
_SHOWN_ROWS = 5  # rows named in an error about many rows


def file_format(path: str | os.PathLike, given: str | None = None) -> str:
    """The format `given`, else the one the file's suffix names."""
    if given:
        check_choice("format", given, FORMATS)
        return given
    fmt = _SUFFIXES.get(Path(path).suffix.lower())
    if fmt is None:
        raise ConfigError(f"{path}: cannot tell the format from the suffix {Path(path).suffix!r}; give --format "
                          f"({', '.join(FORMATS)})")
    return fmt


@dataclass
class Table:
    """A file's rows: column names, each column's values, and each row's
    number as the user sees it (see the module docstring)."""

    path: str
    columns: list[str]
    values: dict[str, list]
    rows: list[int]
    skipped: list[tuple[str, str]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.rows)

    def has(self, name: str) -> bool:
        return name in self.columns or (name.isdigit() and int(name) < len(self.columns))

    def column(self, name: str) -> str:
        """The column `name` names: a column of that name, else (a whole
        number) the column at that position, counted from 0."""
        if name in self.columns:
            return name
        if name.isdigit() and int(name) < len(self.columns):
            return self.columns[int(name)]
        raise DataError(f"{self.path}: no column {name!r}; its columns are {self.columns} (or give a position "
                        f"0..{len(self.columns) - 1})")


def _decode(path: Path, encoding: str) -> str:
    data = path.read_bytes()
    codec = "utf-8-sig" if encoding.lower().replace("_", "-") in ("utf-8", "utf8") else encoding
    try:
        return data.decode(codec)
    except UnicodeDecodeError as err:
        line = data[:err.start].count(b"\n") + 1
        raise DataError(f"{path}: line {line}: not valid {encoding} ({err.reason} at byte {err.start}); give the "
                        "file's --encoding (e.g. latin-1)") from None
    except LookupError:
        raise ConfigError(f"--encoding {encoding!r} is not an encoding Python knows") from None


def _read_delimited(path: Path, fmt: str, header: bool, encoding: str) -> Table:
    text = _decode(path, encoding)
    bad: list[tuple[int, int, int]] = []  # (row, expected fields, actual fields)

    def invalid(row) -> str:
        bad.append((row.number, row.expected_columns, row.actual_columns))
        return "skip"

    data = pa.py_buffer(text.encode())
    parse = pa_csv.ParseOptions(delimiter="\t" if fmt == "tsv" else ",", quote_char=False if fmt == "tsv" else '"',
                                newlines_in_values=fmt == "csv", invalid_row_handler=invalid,
                                ignore_empty_lines=False)  # kept (and dropped below) so that rows count as lines
    read = pa_csv.ReadOptions(use_threads=False, autogenerate_column_names=not header)
    if not text.strip():
        raise DataError(f"{path}: empty file")
    try:
        with pa_csv.open_csv(data, read_options=read, parse_options=parse) as head:
            names = head.schema.names  # from the first block; the whole file is read below
        bad.clear()
        # every column as text: labels such as "007" or "1.0" stay as written
        convert = pa_csv.ConvertOptions(column_types={n: pa.string() for n in names})
        table = pa_csv.read_csv(data, read_options=read, parse_options=parse, convert_options=convert)
    except pa.ArrowInvalid as err:
        raise DataError(f"{path}: cannot be read as {fmt.upper()}: {str(err).splitlines()[0]}") from None
    columns = [str(i) for i in range(len(names))] if not header else list(names)
    if header:
        repeated = sorted({c for c in columns if columns.count(c) > 1})
        if repeated:
            raise DataError(f"{path}: row 1: the header repeats column(s) {repeated}")
    values = {c: [v or "" for v in table.column(i).to_pylist()] for i, c in enumerate(columns)}
    # the row numbers of the kept records: pyarrow counts the header as row 1
    first = 1 if not header else 2
    skipped_rows = sorted(b[0] for b in bad if b[0] is not None)
    rows, r, k = [], first, 0
    for _ in range(table.num_rows):
        while k < len(skipped_rows) and skipped_rows[k] == r:
            r, k = r + 1, k + 1
        rows.append(r)
        r += 1
    blank = [i for i in range(len(rows)) if not any(values[c][i] for c in columns)]
    if blank:  # empty lines: no record
        keep = sorted(set(range(len(rows))) - set(blank))
        rows = [rows[i] for i in keep]
        values = {c: [v[i] for i in keep] for c, v in values.items()}
    skipped = [(f"{path}: row {row if row is not None else '?'}",
                f"{got} field(s), expected {want} ({', '.join(columns)})") for row, want, got in bad]
    return Table(str(path), columns, values, rows, skipped)


def _read_jsonl(path: Path, encoding: str) -> Table:
    text = _decode(path, encoding)
    records, rows = [], []
    for number, line in enumerate(text.split("\n"), start=1):  # lines end at \n only (not at U+2028 ...)
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            raise DataError(f"{path}: row {number}: not a JSON object ({err.msg} at column {err.colno})") from None
        if not isinstance(record, dict):
            raise DataError(f"{path}: row {number}: expected a JSON object, got {type(record).__name__}")
        records.append(record)
        rows.append(number)
    if not records:
        raise DataError(f"{path}: empty file")
    columns = list(dict.fromkeys(k for r in records for k in r))
    return Table(str(path), columns, {c: [r.get(c) for r in records] for c in columns}, rows)


def _read_parquet(path: Path) -> Table:
    try:
        table = pq.read_table(path)
    except (pa.ArrowException, OSError) as err:
        raise DataError(f"{path}: not a readable Parquet file ({err})") from None
    columns = [str(c) for c in table.column_names]
    return Table(str(path), columns, {c: table.column(i).to_pylist() for i, c in enumerate(columns)},
                 list(range(1, table.num_rows + 1)))


def read_table(path: str | os.PathLike, fmt: str | None = None, header: bool = True,
               encoding: str = "utf-8") -> Table:
    """Every row of one file (`Table`): CSV, TSV, JSONL or Parquet
    (`fmt`, default from the suffix). `header`: whether the first CSV/TSV row
    names the columns (without one, columns are named by position ``0``,
    ``1``, ...)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    fmt = file_format(path, fmt)
    if fmt == "parquet":
        return _read_parquet(path)
    if fmt == "jsonl":
        return _read_jsonl(path, encoding)
    return _read_delimited(path, fmt, header, encoding)


# ------------------------------------------------------------------ the task


@dataclass
class DataSource(ConfigBase):
    """Which files and columns make a task (``--task-file`` holds these fields).

    `splits` maps split names to files (relative to `data_dir`); without a
    ``dev`` file, `dev_fraction` of train (stratified by label, seeded)
    becomes dev. `kind` is one kind for every label column or a mapping of
    column -> kind. Labels: class names as written; with `label_names` (a
    file of one name a line), also ids 0, 1, ... into it; multi-label: a JSON
    list or a string split on `label_separator`.
    """

    splits: dict
    text_column: str
    label_columns: list
    text_pair_column: str | None = None
    id_column: str | None = None
    kind: str | dict = "classification"
    name: str | None = None
    data_dir: str | None = None
    format: str | None = None
    header: bool = True
    encoding: str = "utf-8"
    label_separator: str = ","
    label_names: str | None = None
    dev_fraction: float | None = None
    seed: int = 0
    max_skipped: float | None = 0.01
    tag_scheme: str = "auto"  # token classification: IOB1, BIO or IOBES (auto: the file's)

    error = ConfigError

    def validate(self) -> None:
        if not isinstance(self.splits, dict) or not self.splits:
            raise ConfigError("give the data files: --split NAME=PATH (e.g. --split train=train.csv)")
        if "train" not in self.splits:
            raise ConfigError(f"no train split among {sorted(self.splits)}; give --split train=PATH")
        if isinstance(self.label_columns, str):
            self.label_columns = [self.label_columns]
        if not self.label_columns or len(set(self.label_columns)) != len(self.label_columns):
            raise ConfigError("give one --label-column or more, each once")
        kinds = self.kind if isinstance(self.kind, dict) else {c: self.kind for c in self.label_columns}
        for column in self.label_columns:
            check_choice("kind", kinds.get(column), USER_KINDS)
        if self.format is not None:
            check_choice("format", self.format, FORMATS)
        if self.is_tagged:
            if len(self.label_columns) != 1 or self.text_pair_column:
                raise ConfigError("--kind token_classification reads one --token-column and one --tag-column")
            if self.format not in (None,) + TAGGED_FORMATS:
                raise ConfigError(f"--kind token_classification reads {' or '.join(TAGGED_FORMATS)} files, not "
                                  f"--format {self.format}")
            if self.tag_scheme != "auto":
                check_choice("tag_scheme", self.tag_scheme, TAG_SCHEMES)
        if self.dev_fraction is not None:
            check_fraction("dev_fraction", self.dev_fraction, high_open=True)
            if "dev" in self.splits:
                raise ConfigError("--dev-fraction makes a dev split out of train; there is a dev file already")
        if self.max_skipped is not None:
            check_fraction("max_skipped", self.max_skipped, low_open=False)
        if not self.label_separator:
            raise ConfigError("--label-separator must not be empty")

    def file_options(self) -> dict:
        """How the files are read (kept in the task spec: `predict --input` reads alike)."""
        if self.is_tagged:
            return {"format": self.format, "tag_scheme": self.tag_scheme, "encoding": "utf-8"}
        return {"format": self.format, "header": self.header, "encoding": self.encoding,
                "label_separator": self.label_separator}

    @property
    def is_tagged(self) -> bool:
        """A token classification task (one tag per word)."""
        return any(self.kind_of(c) == "token_classification" for c in self.label_columns)

    def kind_of(self, column: str) -> str:
        return self.kind[column] if isinstance(self.kind, dict) else self.kind

    def path(self, split: str) -> Path:
        path = Path(self.splits[split])
        return path if path.is_absolute() or self.data_dir is None else Path(self.data_dir) / path

    @property
    def text_columns(self) -> list[str]:
        return [self.text_column] + ([self.text_pair_column] if self.text_pair_column else [])

    @classmethod
    def from_task_file(cls, path: str | os.PathLike, **overrides) -> "DataSource":
        """The task file's fields, then `overrides` (the flags given on the
        command line); relative paths in the file are relative to it; the
        task's name defaults to the file's (``goemotions.task.json``:
        ``goemotions``)."""
        path = Path(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except OSError as err:
            raise ConfigError(f"--task-file {path}: {err.strerror or err}") from None
        except json.JSONDecodeError as err:
            raise ConfigError(f"--task-file {path}: line {err.lineno}: not JSON ({err.msg})") from None
        if not isinstance(data, dict):
            raise ConfigError(f"--task-file {path}: expected a JSON object")
        if isinstance(data.get("label_column"), str) and "label_columns" not in data:
            data["label_columns"] = [data.pop("label_column")]
        base = path.parent
        for key in ("data_dir", "label_names"):
            if data.get(key) and not Path(data[key]).is_absolute():
                data[key] = str(base / data[key])
        data.setdefault("name", path.name.split(".")[0])  # goemotions.task.json: goemotions
        data.update({k: v for k, v in overrides.items() if v is not None})
        try:
            return cls.from_dict(data)
        except ConfigError as err:
            raise ConfigError(f"--task-file {path}: {err}") from None


@dataclass
class UserData:
    """What `read_source` read: one spec per label column (the first is the
    store's default head) and the examples of every split."""

    specs: list[TaskSpec]
    splits: dict[str, LoadResult]
    provenance: dict

    @property
    def spec(self) -> TaskSpec:
        return self.specs[0]

    def extract_fields(self) -> dict:
        """The `bertvision.store.extract.ExtractConfig` fields of this task:
        its name, every head's spec and the files' provenance."""
        return {"task": self.spec.name, "heads": [h.to_dict() for h in self.specs], "source": self.provenance}


def parse_split_args(values: list[str]) -> dict[str, str]:
    """``--split NAME=PATH`` flags -> ``{NAME: PATH}``."""
    out = {}
    for value in values:
        name, sep, path = value.partition("=")
        if not sep or not name or not path:
            raise ConfigError(f"--split {value!r}: give NAME=PATH (e.g. train=train.csv)")
        if name in out:
            raise ConfigError(f"--split {name} is given twice")
        out[name] = path
    return out


def find_split_files(folder: str | os.PathLike) -> dict[str, str]:
    """The train/dev/test files of a folder (``train.csv``, ``dev.tsv``, ...)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ConfigError(f"--data-dir {folder} is not a folder")
    found = {}
    for split in ("train", "dev", "test"):
        names = sorted(p.name for p in folder.iterdir() if p.stem == split and p.suffix.lower() in _SUFFIXES)
        if len(names) > 1:
            raise ConfigError(f"{folder} holds {names}; say which with --split {split}=FILE")
        if names:
            found[split] = names[0]
    return found


def _rows_text(rows: list[int]) -> str:
    shown = ", ".join(str(r) for r in rows[:_SHOWN_ROWS])
    return shown + (f" and {len(rows) - _SHOWN_ROWS} more" if len(rows) > _SHOWN_ROWS else "")


class _LabelReader:
    """Turns one label column's cells into label values of its kind."""

    def __init__(self, kind: str, names: tuple[str, ...], separator: str, ids: bool):
        self.kind, self.names, self.separator, self.from_file = kind, names, separator, ids

    def tokens(self, value, where: str) -> list[str]:
        """A cell's label(s) as strings (before they are checked against names)."""
        if value is None or (isinstance(value, str) and not value.strip()):
            raise DataError(f"{where}: empty label")
        if self.kind != "multi_label":
            if isinstance(value, (list, dict)):
                raise DataError(f"{where}: expected one label, got {json.dumps(value)}")
            return [str(value).strip()]
        if isinstance(value, str) and value.lstrip().startswith("["):
            try:
                value = json.loads(value)
            except json.JSONDecodeError:
                raise DataError(f"{where}: {value!r} starts like a JSON list but is not one") from None
        if isinstance(value, (list, tuple)):
            return [str(v).strip() for v in value]
        return [t.strip() for t in str(value).split(self.separator) if t.strip()]

    def index(self, token: str, where: str) -> int:
        names = self.names
        if token in names:
            return names.index(token)
        if self.from_file and token.isdigit() and int(token) < len(names):
            return int(token)
        raise DataError(f"{where}: label {token!r} is not one of the {len(names)} labels of train"
                        + (" and --label-names" if self.from_file else "")
                        + f" ({', '.join(names[:8])}{', ...' if len(names) > 8 else ''})")

    def value(self, cell, where: str):
        if self.kind == "regression":
            try:
                score = float(cell)
            except (TypeError, ValueError):
                score = math.nan
            if not math.isfinite(score):
                raise DataError(f"{where}: {cell!r} is not a number (--kind regression)")
            return score
        indices = [self.index(t, where) for t in self.tokens(cell, where)]
        if self.kind == "classification":
            return indices[0]
        hot = [0] * len(self.names)
        for i in indices:
            hot[i] = 1
        return hot


def _label_names(source: DataSource, column: str, train: Table) -> tuple[str, ...]:
    """A label column's names: the --label-names file's, in its order, or
    every name train uses, sorted (a stable order)."""
    if source.label_names is not None:
        path = Path(source.label_names)
        try:
            names = [n.strip() for n in path.read_text(encoding="utf-8-sig").splitlines() if n.strip()]
        except OSError as err:
            raise ConfigError(f"--label-names {path}: {err.strerror or err}") from None
        if len(set(names)) != len(names):
            raise DataError(f"{path}: a label name is given twice")
        if len(names) < 2:
            raise DataError(f"{path}: needs at least two label names")
        return tuple(names)
    reader = _LabelReader(source.kind_of(column), (), source.label_separator, False)
    col = train.column(column)
    found = set()
    for row, cell in zip(train.rows, train.values[col]):
        found.update(reader.tokens(cell, f"{train.path}: row {row}, column {column!r}"))
    if len(found) < 2:
        raise DataError(f"{train.path}: column {column!r} holds {len(found)} distinct label(s); a classifier needs "
                        "two or more")
    return tuple(sorted(found))


def _examples(table: Table, split: str, text_columns: list[str], id_column: str | None, readers: dict,
              labelled: bool) -> list[Example]:
    """A table's examples: texts (an empty one is refused), id, and the
    labels of each column in `readers` (the first is `Example.label`)."""
    text_cols = [table.column(c) for c in text_columns]
    for names, col in zip(text_columns, text_cols):
        empty = [r for r, v in zip(table.rows, table.values[col]) if v is None or not str(v).strip()]
        if empty:
            raise DataError(f"{table.path}: empty text in column {names!r} at row(s) {_rows_text(empty)}; fill or "
                            "remove them")
    id_col = table.column(id_column) if id_column else None
    label_cols = {c: table.column(c) for c in readers} if labelled else {}
    examples, seen = [], {}
    for i, row in enumerate(table.rows):
        uid = f"{split}-{row}"
        if id_col is not None:
            uid = str(table.values[id_col][i] if table.values[id_col][i] is not None else "").strip()
            if not uid:
                raise DataError(f"{table.path}: row {row}, column {id_column!r}: empty id")
            if uid in seen:
                raise DataError(f"{table.path}: row {row}, column {id_column!r}: id {uid!r} is also row "
                                f"{seen[uid]}")
            seen[uid] = row
        labels = {c: readers[c].value(table.values[col][i], f"{table.path}: row {row}, column {c!r}")
                  for c, col in label_cols.items()}
        first = labels.get(next(iter(readers))) if labels else None
        examples.append(Example(uid=uid, texts=tuple(str(table.values[c][i]) for c in text_cols), label=first,
                                labels=labels or None))
    return examples


def read_source(source: DataSource) -> UserData:
    """Read every split of `source` and resolve its task (see the module
    docstring): label names from train, every other split checked against
    them, a seeded stratified dev split when `source.dev_fraction` asks."""
    if source.is_tagged:
        return _read_tagged_source(source)
    tables = {split: read_table(source.path(split), source.format, source.header, source.encoding)
              for split in source.splits}
    for split, table in tables.items():
        total = len(table) + len(table.skipped)
        if table.skipped and source.max_skipped is not None and len(table.skipped) / total > source.max_skipped:
            where, reason = table.skipped[0]
            raise DataError(f"{where}: {reason}; {len(table.skipped)} of {total} rows of {split} are malformed "
                            f"(> --max-skipped {source.max_skipped:g}); fix the file or raise --max-skipped")
    train = tables["train"]
    for column in source.text_columns + ([source.id_column] if source.id_column else []):
        for table in tables.values():
            table.column(column)
    names = {c: () if source.kind_of(c) == "regression" else _label_names(source, c, train)
             for c in source.label_columns}
    readers = {c: _LabelReader(source.kind_of(c), names[c], source.label_separator, source.label_names is not None)
               for c in source.label_columns}
    loaded = {}
    for split, table in tables.items():
        present = [c for c in source.label_columns if table.has(c) or split == "train"]
        if split == "train" or len(present) == len(source.label_columns):
            labelled = True
        elif not present:
            labelled = False  # an unlabelled split (e.g. a test file without the label column)
        else:
            missing = sorted(set(source.label_columns) - set(present))
            raise DataError(f"{table.path}: no label column(s) {missing}; a split has all label columns or none")
        examples = _examples(table, split, source.text_columns, source.id_column, readers, labelled)
        loaded[split] = LoadResult(examples, list(table.skipped), source.name or "task", split, table.path)
    provenance = {"files": {s: str(source.path(s)) for s in source.splits}}
    if source.dev_fraction is not None:
        train_result, dev_result, info = _split_dev(loaded["train"], source)
        loaded = {"train": train_result, "dev": dev_result, **{k: v for k, v in loaded.items() if k != "train"}}
        provenance["dev_split"] = info
    text_columns = tuple(source.text_columns)
    first = source.label_columns[0]
    spec = user_task(source.name or "task", source.kind_of(first), text_columns, first, names[first],
                     source.id_column, label_ids=source.label_names is not None, file_options=source.file_options())
    specs = [spec] + [spec.for_label(c, source.kind_of(c), names[c]) for c in source.label_columns[1:]]
    return UserData(specs, loaded, provenance)


def _tagged_file(path, spec_or_source, split: str, scheme: str, types=None,
                 tagged: bool | None = True) -> tuple[LoadResult, str | None]:
    """One CoNLL/JSONL file of a token classification task as examples: the
    words, their tags converted to BIO, the text their words joined by spaces;
    uids ``SPLIT-LINE`` (the line the sentence starts on). Also the scheme
    the file's tags were written in (None: untagged)."""
    fmt = spec_or_source.format if isinstance(spec_or_source, DataSource) else \
        spec_or_source.file_options.get("format")
    token = spec_or_source.text_column if isinstance(spec_or_source, DataSource) else spec_or_source.text_columns[0]
    tag = spec_or_source.label_columns[0] if isinstance(spec_or_source, DataSource) else spec_or_source.label_column
    if fmt is None and Path(path).suffix.lower() in (".jsonl", ".ndjson", ".json"):
        fmt = "jsonl"
    sentences = read_tagged(path, file_format=fmt or "conll", token_column=token, tag_column=tag, scheme=scheme,
                            types=types, tagged=tagged)
    examples = [Example(uid=f"{split}-{s.line}", texts=(" ".join(s.words),), words=s.words, tags=s.tags)
                for s in sentences]
    return LoadResult(examples, [], getattr(spec_or_source, "name", None) or "task", split, str(path)), sentences.scheme


def _read_tagged_source(source: DataSource) -> UserData:
    """A token classification task: every split read with `read_tagged`
    (train's tags in `source.tag_scheme`, or the one it is valid in), the
    label names the BIO tags of train's entity types, the other splits'
    tags checked against those types (an unknown tag is refused with file and
    line); the spec records the files' scheme and the internal one (BIO)."""
    train, scheme = _tagged_file(source.path("train"), source, "train", source.tag_scheme)
    types = entity_types(t for ex in train.examples for t in ex.tags)
    if not types:
        raise DataError(f"{train.source}: no entity tags (every tag is O); a tagger needs at least one entity type")
    loaded = {"train": train}
    for split in source.splits:
        if split != "train":
            loaded[split] = _tagged_file(source.path(split), source, split, source.tag_scheme, types, tagged=None)[0]
    provenance = {"files": {s: str(source.path(s)) for s in source.splits}}
    if source.dev_fraction is not None:
        train_result, dev_result, info = _split_dev(loaded["train"], source)
        loaded = {"train": train_result, "dev": dev_result, **{k: v for k, v in loaded.items() if k != "train"}}
        provenance["dev_split"] = info
    options = {**source.file_options(), "tag_scheme": scheme, "scheme": INTERNAL_SCHEME}
    spec = user_task(source.name or "task", "token_classification", (source.text_column,), source.label_columns[0],
                     bio_label_names(types), None, {s: str(source.splits.get(s, source.splits["train"])) for s in loaded},
                     file_options=options)
    return UserData([spec], loaded, provenance)


def holds_task_columns(path: str | os.PathLike, spec: TaskSpec) -> bool:
    """Whether `path` is a file of `spec`'s own kind: a CSV, TSV or Parquet
    file, or a JSONL file whose first row has the task's text column (a
    JSONL of ``{"text": ...}`` inputs is not); token classification: any
    file but a ``.txt`` one (CoNLL column files have any name), a JSONL file
    whose first row has the words' key."""
    fmt = _SUFFIXES.get(Path(path).suffix.lower())
    if spec.kind == "token_classification" and fmt != "jsonl":
        return Path(path).suffix.lower() != ".txt"
    if fmt in ("csv", "tsv", "parquet") and Path(path).suffix.lower() != ".txt":
        return True
    if fmt != "jsonl":
        return False
    with open(path, encoding=spec.file_options.get("encoding") or "utf-8-sig", errors="replace") as handle:
        first = next((line for line in handle if line.strip()), "")
    try:
        row = json.loads(first)
    except json.JSONDecodeError:
        return False
    if spec.kind == "token_classification":
        return isinstance(row, dict) and jsonl_keys(spec.text_columns[0], spec.label_column)[0] in row
    return isinstance(row, dict) and spec.text_columns[0] in row


def read_examples(path: str | os.PathLike, spec: TaskSpec, split: str | None = None) -> LoadResult:
    """The examples of another file of a user task (``predict --input``):
    read as its training files were (`TaskSpec.file_options`, the format from
    the suffix), with the task's text and id columns; gold labels where the
    file has the label column. Ids without an id column: ``SPLIT-ROW``, the
    split's name defaulting to the file's stem. Token classification: a
    CoNLL/JSONL file, tagged or not, read with the task's columns, tags in the
    scheme it was trained on (auto if so)."""
    split = split or Path(path).stem
    if spec.kind == "token_classification":
        types = sorted({name.split("-", 1)[1] for name in spec.label_names if "-" in name})
        return _tagged_file(path, spec, split, "auto", types, tagged=None)[0]
    options = dict(spec.file_options)
    fmt = options.get("format") if Path(path).suffix.lower() not in _SUFFIXES else None
    table = read_table(path, fmt, options.get("header", True), options.get("encoding") or "utf-8")
    reader = _LabelReader(spec.kind, spec.label_names, options.get("label_separator") or ",",
                          spec.label_format == "index")
    examples = _examples(table, split, list(spec.text_columns), spec.id_column, {spec.label_column: reader},
                         table.has(spec.label_column))
    return LoadResult(examples, list(table.skipped), spec.name, split, str(path))


def _split_dev(train: LoadResult, source: DataSource) -> tuple[LoadResult, LoadResult, dict]:
    """`source.dev_fraction` of train as dev: stratified by the first label
    column for classification (when every class has two examples or more),
    seeded; both keep file order."""
    examples = train.examples
    n = len(examples)
    n_dev = int(round(source.dev_fraction * n))
    if n_dev < 1 or n_dev >= n:
        raise DataError(f"--dev-fraction {source.dev_fraction:g} of {n} train examples leaves no dev or no train "
                        "examples")
    labels = [ex.label for ex in examples]
    stratify = None
    if source.kind_of(source.label_columns[0]) == "classification":
        counts = np.bincount(labels)
        classes = int(np.sum(counts > 0))
        if counts[counts > 0].min() >= 2 and classes <= n_dev and classes <= n - n_dev:
            stratify = labels
    keep, dev = train_test_split(np.arange(n), test_size=n_dev, random_state=source.seed, stratify=stratify)
    keep, dev = np.sort(keep), np.sort(dev)
    info = {"from": "train", "fraction": source.dev_fraction, "seed": source.seed,
            "stratified": stratify is not None, "dev_examples": len(dev)}
    return (dataclasses.replace(train, examples=[examples[i] for i in keep]),
            dataclasses.replace(train, examples=[examples[i] for i in dev], split="dev", skipped=[]), info)
