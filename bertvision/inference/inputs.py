"""Inputs from users for serving and ``pipelines.predict``: the fields of
a task's input (`input_fields`) and reading a file of inputs (`read_inputs`:
a task's own benchmark file, ``.jsonl`` or tab-separated lines).

Example:
    >>> from bertvision.data.tasks import get_task
    >>> _ = Path("inputs.jsonl").write_text('{"id": "1", "text": "a gorgeous film"}\\n')
    >>> items, split = read_inputs("inputs.jsonl", get_task("sst2"))
    >>> items[0], split
    ({'id': '1', 'text': 'a gorgeous film'}, 'inputs')
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from bertvision.data.readers import decode_utf8, load_examples
from bertvision.errors import ServeError
from bertvision.data import files
from bertvision.data.tasks import TaskSpec


__all__ = ["ALL_INPUT_FIELDS", "input_fields", "read_inputs"]


def input_fields(task: TaskSpec) -> tuple[str, ...]:
    """The fields of one input of `task`: ``("text",)``, ``("text", "text_pair")``
    or, for SQuAD, ``("question", "context")``.

    >>> from bertvision.data.tasks import get_task
    >>> input_fields(get_task("mrpc"))
    ('text', 'text_pair')
    """
    if task.kind == "span":
        return ("question", "context")
    return ("text",) if len(task.text_fields) == 1 else ("text", "text_pair")


ALL_INPUT_FIELDS = ("text", "text_pair", "question", "context")


def read_inputs(path: str | Path, task: TaskSpec, max_skipped: float | None = 0.01) -> tuple[list, str]:
    """Inputs of `task` from a file: ``(items or examples, split name)``.

    - a file of the task's own benchmark format: a GLUE TSV named as the task
      publishes it (``dev.tsv``, ``test.tsv``, ...; read by
      `bertvision.data.readers.load_examples`, with labels when it has them) or, for
      SQuAD, any ``.json`` file in SQuAD's format: `Example` objects; records
      it cannot read are reported on stderr, and more than `max_skipped` of
      them (a share; None: any) stop it with `DataError` (a submission file
      must not come out short without a word);
    - ``.jsonl``: one input per line, a string or an object with the task's
      fields (`input_fields`) and optionally ``id``;
    - any other text file: one input per line, the fields separated by a tab.
    - your own task's files (a task with `TaskSpec.text_columns`): a CSV, TSV
      or Parquet file, or a JSONL file whose rows have the task's text column,
      read as its training files were (`bertvision.data.files.read_examples`):
      `Example` objects with the id column kept and gold labels where the
      file has the label column.

    Items are ``{"id", field: text, ...}`` dicts for `Predictor.examples`.
    """
    path = Path(path)
    if not path.is_file():
        raise ServeError(f"--input {path}: no such file")
    if task.text_columns and files.holds_task_columns(path, task):
        loaded = files.read_examples(path, task, split=path.stem)
        if loaded.skipped:
            print(loaded.skipped_report(), file=sys.stderr)
        return loaded.check_skipped(max_skipped).examples, path.stem
    glue_split = {file: split for split, file in task.splits.items()}.get(path.name)
    if (task.kind == "span" and path.suffix == ".json") or (task.kind != "span" and glue_split):
        split = path.stem if task.kind == "span" else glue_split
        loaded = load_examples(task, split, path.parent)
        if loaded.skipped:
            print(loaded.skipped_report(), file=sys.stderr)
        return loaded.check_skipped(max_skipped).examples, split
    fields_ = input_fields(task)
    items = []
    text = decode_utf8(path.read_bytes(), f"--input {path}", ServeError)
    # lines end at "\n" only: str.splitlines would also split inside a line at \x1c, \u2028, ...
    for number, line in enumerate(text.split("\n"), start=1):
        line = line[:-1] if line.endswith("\r") else line
        if not line.strip():
            continue
        where = f"{path}:{number}"
        if path.suffix == ".jsonl":
            try:
                item = json.loads(line)
            except json.JSONDecodeError as err:
                raise ServeError(f"{where}: not valid JSON ({err.msg})") from None
            if isinstance(item, str):
                item = {"text": item}
            if not isinstance(item, dict):
                raise ServeError(f"{where}: expected a string or an object with {', '.join(fields_)}")
            item = {"id": str(number), **item}
        else:
            values = line.split("\t")
            if len(values) != len(fields_):
                raise ServeError(f"{where}: {len(values)} tab-separated field(s); task {task.name} takes "
                                 f"{len(fields_)} ({', '.join(fields_)})")
            item = {"id": str(number), **dict(zip(fields_, values))}
        items.append(item)
    if not items:
        raise ServeError(f"--input {path}: no inputs")
    return items, path.stem
