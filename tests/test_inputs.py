"""Inputs from users, fuzzed (issue 32 items 3, 5 and 7): `inputs.read_inputs`
(``pipelines.predict --input``), the GLUE TSV and SQuAD JSON readers and the
HTTP body parser (`server.parse_request`, and the app answering a raw ASGI
request). Every input either reads to the examples a plain reference reading
gives, or ends in the project's one-line error (`BertVisionError`; 4xx for the
server): never another exception, a hang or an input silently dropped.

Hypothesis runs a bounded number of examples (`FUZZ`) with a deadline, so
the module stays a few seconds."""

import asyncio
import json

import pytest
from fastapi import HTTPException
from fastapi.exceptions import RequestValidationError
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bertvision.data.readers import load_examples
from bertvision.data.tasks import get_task
from bertvision.errors import BertVisionError, DataError, ServeError
from bertvision.inference.server import PredictRequest, ServeConfig, create_app, parse_request
from bertvision.inference.inputs import read_inputs
from bertvision.inference.serving import Predictor

FUZZ = settings(max_examples=40, deadline=2000, derandomize=True,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])

# a line of text: anything but the line ends; unicode separators (\x1c, \u2028, ...) included on purpose
LINE = st.text(st.characters(blacklist_characters="\n\r", blacklist_categories=("Cs",)), max_size=30)
FIELD = st.text(st.characters(blacklist_characters="\n\r\t", blacklist_categories=("Cs",)), max_size=20)


# ------------------------------------------------------------ --input files


@pytest.mark.parametrize("name, data, line", [
    ("x.jsonl", '"fine"\n"caf'.encode() + "\u00e9".encode("latin-1") + b'"\n', 2),
    ("x.txt", b"a good film\n\xff\xfe\x00binary\x00\n", 2),
    ("bin.txt", bytes(range(256)), 2),  # byte 10 ends line 1
])
def test_a_non_utf8_input_file_is_one_line_naming_file_and_line(tmp_path, name, data, line):
    path = tmp_path / name
    path.write_bytes(data)
    with pytest.raises(ServeError, match=rf"{name}:{line}: not valid UTF-8 \(.*\); save it as UTF-8 text"):
        read_inputs(path, get_task("sst2"))


def test_a_line_holding_a_unicode_separator_stays_one_input(tmp_path):
    """str.splitlines split "a\\x1cb" into two inputs (two predictions for one line)."""
    path = tmp_path / "x.txt"
    path.write_text("one\x1cline\nnext\u2028line\r\n", encoding="utf-8")
    items, _ = read_inputs(path, get_task("sst2"))
    assert [i["text"] for i in items] == ["one\x1cline", "next\u2028line"]
    assert [i["id"] for i in items] == ["1", "2"]


def _reference_lines(lines):
    """What a plain reading of a text file gives: one input per non-blank line, its number as id."""
    return [(str(n), line) for n, line in enumerate(lines, start=1) if line.strip()]


@FUZZ
@given(lines=st.lists(LINE, max_size=8), bom=st.booleans(), crlf=st.booleans())
def test_text_inputs_read_as_the_reference_or_one_error(tmp_path_factory, lines, bom, crlf):
    path = tmp_path_factory.mktemp("txt") / "in.txt"
    text = ("\r\n" if crlf else "\n").join(lines)
    path.write_bytes((b"\xef\xbb\xbf" if bom else b"") + text.encode("utf-8"))
    expected = [(n, line) for n, line in _reference_lines(lines)]
    if any("\t" in line for _, line in expected) or not expected:
        with pytest.raises(ServeError, match=r"(tab-separated field|no inputs)"):
            read_inputs(path, get_task("sst2"))
        return
    items, split = read_inputs(path, get_task("sst2"))
    assert split == "in" and [(i["id"], i["text"]) for i in items] == expected


@FUZZ
@given(pairs=st.lists(st.tuples(FIELD, FIELD), min_size=1, max_size=6))
def test_pair_inputs_read_as_the_reference(tmp_path_factory, pairs):
    path = tmp_path_factory.mktemp("pairs") / "pairs.txt"
    path.write_text("\n".join(f"{a}\t{b}" for a, b in pairs), encoding="utf-8")
    expected = [(str(n), a, b) for n, (a, b) in enumerate(pairs, start=1) if f"{a}\t{b}".strip()]
    if not expected:
        with pytest.raises(ServeError, match="no inputs"):
            read_inputs(path, get_task("mrpc"))
        return
    items, _ = read_inputs(path, get_task("mrpc"))
    assert [(i["id"], i["text"], i["text_pair"]) for i in items] == expected


JSON_VALUE = st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=10),
                          lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner,
                                                                                       max_size=3), max_leaves=6)


@FUZZ
@given(values=st.lists(st.text(max_size=20) | st.fixed_dictionaries({"text": st.text(max_size=20)}) | JSON_VALUE,
                       min_size=1, max_size=6))
def test_jsonl_inputs_read_as_json_or_one_error(tmp_path_factory, values):
    path = tmp_path_factory.mktemp("jsonl") / "in.jsonl"
    path.write_text("\n".join(json.dumps(v) for v in values), encoding="utf-8")
    if any(not isinstance(v, (str, dict)) for v in values):
        with pytest.raises(ServeError, match=r"in\.jsonl:\d+: expected a string or an object"):
            read_inputs(path, get_task("sst2"))
        return
    items, _ = read_inputs(path, get_task("sst2"))
    expected = [{"id": str(n), **({"text": v} if isinstance(v, str) else v)} for n, v in enumerate(values, start=1)]
    assert items == expected


@FUZZ
@given(data=st.binary(max_size=64), suffix=st.sampled_from([".txt", ".jsonl"]))
def test_any_bytes_read_or_end_in_one_line(tmp_path_factory, data, suffix):
    path = tmp_path_factory.mktemp("bytes") / f"in{suffix}"
    path.write_bytes(data)
    try:
        items, _ = read_inputs(path, get_task("mrpc"))
    except ServeError as err:
        assert "\n" not in str(err) and str(path) in str(err)
        return
    assert items and all(isinstance(i, dict) and i["id"] for i in items)


# ------------------------------------------------------------- GLUE / SQuAD


ROW_TEXT = st.text(st.characters(blacklist_characters="\n\r\t", blacklist_categories=("Cs",)), max_size=20)


@FUZZ
@given(rows=st.lists(st.tuples(ROW_TEXT, st.sampled_from(["0", "1", "2", " 1", "x", ""])), max_size=8))
def test_glue_tsv_reads_every_row_or_reports_it(tmp_path_factory, rows):
    """SST-2 train.tsv (sentence, label): each row is an example equal to
    the reference split, or a reported skip; a bad label is one DataError."""
    folder = tmp_path_factory.mktemp("sst2")
    (folder / "train.tsv").write_text("sentence\tlabel\n" + "".join(f"{t}\t{l}\n" for t, l in rows),
                                      encoding="utf-8")
    bad_label = [l for t, l in rows if t.strip() and l.strip() not in ("0", "1")]
    if bad_label:
        with pytest.raises(DataError, match=r"train\.tsv:\d+: column 'label': unknown label"):
            load_examples("sst2", "train", folder)
        return
    loaded = load_examples("sst2", "train", folder)
    assert [(e.texts[0], e.label) for e in loaded.examples] == [(t, int(l.strip())) for t, l in rows if t.strip()]
    assert len(loaded.examples) + len(loaded.skipped) == len(rows)


@FUZZ
@given(data=st.binary(max_size=80))
def test_glue_tsv_of_any_bytes_reads_or_ends_in_one_line(tmp_path_factory, data):
    folder = tmp_path_factory.mktemp("sst2b")
    (folder / "dev.tsv").write_bytes(b"sentence\tlabel\n" + data)
    try:
        loaded = load_examples("sst2", "dev", folder)
    except DataError as err:
        assert "\n" not in str(err) and "dev.tsv" in str(err)
        return
    assert all(e.texts[0].strip() for e in loaded.examples)


SQUAD_JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-3, 40) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(
        st.sampled_from(["version", "data", "title", "paragraphs", "context", "qas", "id", "question",
                         "answers", "text", "answer_start", "is_impossible"]), inner, max_size=4),
    max_leaves=12)


@FUZZ
@given(data=SQUAD_JSON)
def test_squad_json_of_any_shape_reads_or_ends_in_one_line(tmp_path_factory, data):
    folder = tmp_path_factory.mktemp("squad")
    (folder / "x.json").write_text(json.dumps(data), encoding="utf-8")
    try:
        loaded = load_examples("squad_v2", "x", folder)
    except DataError as err:
        assert "\n" not in str(err) and "x.json" in str(err)
        return
    for e in loaded.examples:  # what was read is whole: a question, its context, answers inside it
        assert len(e.texts) == 2 and all(isinstance(t, str) for t in e.texts)


# ------------------------------------------------------------------ HTTP


def _reference_request(body: bytes):
    """What the body means to a plain UTF-8 JSON reader: a PredictRequest or None."""
    try:
        return PredictRequest.model_validate(json.loads(body.decode("utf-8")))
    except (UnicodeDecodeError, ValueError):
        return None


REQUEST = st.fixed_dictionaries(
    {"inputs": st.lists(st.text(max_size=10) | st.fixed_dictionaries({"text": st.text(max_size=10)}), max_size=3)},
    optional={"task": st.text(max_size=5) | st.integers(), "tasks": st.lists(st.text(max_size=5), max_size=2)})


@FUZZ
@given(body=st.binary(max_size=60) | REQUEST.map(lambda r: json.dumps(r).encode())
       | JSON_VALUE.map(lambda v: json.dumps(v).encode()))
def test_http_bodies_parse_as_the_reference_or_get_4xx(body):
    reference = _reference_request(body)
    try:
        request = parse_request(body, "application/json")
    except HTTPException as err:
        assert reference is None and 400 <= err.status_code < 500 and "\n" not in err.detail
        return
    except RequestValidationError:
        assert reference is None
        return
    assert request == reference


def _asgi_post(app, body: bytes, content_type: str = "application/json") -> tuple[int, dict]:
    """POST /v1/predict to the ASGI app in this process: (status, JSON answer)."""
    sent = []

    async def receive():
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message):
        sent.append(message)

    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
             "path": "/v1/predict", "raw_path": b"/v1/predict", "query_string": b"", "root_path": "",
             "headers": [(b"content-type", content_type.encode()), (b"content-length", str(len(body)).encode())],
             "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 80)}
    asyncio.run(app(scope, receive, send))
    status = next(m["status"] for m in sent if m["type"] == "http.response.start")
    return status, json.loads(b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body"))


def test_a_non_utf8_body_gets_400_saying_so():
    """It got FastAPI's generic 'There was an error parsing the body'."""
    app = create_app(Predictor([], []), ServeConfig(runs=["-"]))
    status, answer = _asgi_post(app, b'{"task": "sst2", "inputs": ["caf\xe9"]}')
    assert status == 400 and answer["error"].startswith("the body is not UTF-8 text (byte 32: invalid")
    status, answer = _asgi_post(app, b'{"task": "sst2", "inputs": ["x"]}')
    assert status == 404 and "unknown task" in answer["error"]  # a valid body gets through to the tasks
    status, answer = _asgi_post(app, b'{"inputs": 5}')
    assert status == 422 and answer["error"].startswith("inputs: ")
    status, answer = _asgi_post(app, b'{"inputs": ["x"]}', content_type="text/plain")
    assert status == 422 and "Content-Type: application/json" in answer["error"]


@FUZZ
@given(body=st.binary(max_size=40))
def test_the_app_answers_any_body_with_4xx_json(body):
    app = create_app(Predictor([], []), ServeConfig(runs=["-"]))
    status, answer = _asgi_post(app, body)
    assert 400 <= status < 500 and isinstance(answer["error"], str) and answer["error"]


# ------------------------------------------------- your own data, CoNLL


CELL = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00\r"), max_size=12)


def _reference_csv(text: str, delimiter: str) -> list[list[str]]:
    """Python's csv module reading the same text: the reference a CSV/TSV read must agree with."""
    import csv
    import io as stdio

    quoting = csv.QUOTE_NONE if delimiter == "\t" else csv.QUOTE_MINIMAL
    return [row for row in csv.reader(stdio.StringIO(text, newline=""), delimiter=delimiter, quoting=quoting)]


@FUZZ
@given(rows=st.lists(st.tuples(CELL, CELL), min_size=1, max_size=6))
def test_own_csv_reads_as_pythons_csv_module(tmp_path_factory, rows):
    import csv
    import io as stdio

    from bertvision.data.files import read_table

    buffer = stdio.StringIO(newline="")
    csv.writer(buffer, lineterminator="\n").writerows([("text", "label"), *rows])
    path = tmp_path_factory.mktemp("csv") / "train.csv"
    path.write_text(buffer.getvalue(), encoding="utf-8", newline="")
    expected = [r for r in _reference_csv(buffer.getvalue(), ",")[1:] if any(r)]
    table = read_table(path)
    assert table.columns == ["text", "label"]
    assert list(zip(table.values["text"], table.values["label"])) == [tuple(r) for r in expected]
    assert len(table.rows) == len(expected) and not table.skipped


TSV_CELL = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00\r\n\t"), max_size=12)


@FUZZ
@given(rows=st.lists(st.lists(TSV_CELL, min_size=1, max_size=3), min_size=1, max_size=6))
def test_own_tsv_reads_every_row_or_reports_it(tmp_path_factory, rows):
    from bertvision.data.files import read_table

    text = "text\tlabel\n" + "".join("\t".join(r) + "\n" for r in rows)
    path = tmp_path_factory.mktemp("tsv") / "train.tsv"
    path.write_text(text, encoding="utf-8")
    try:
        table = read_table(path)
    except DataError as err:
        assert "\n" not in str(err)
        return
    reference = [r for r in _reference_csv(text, "\t")[1:] if r]  # a blank line is no record
    kept = [r for r in reference if len(r) == 2 and any(r)]
    assert list(zip(table.values["text"], table.values["label"])) == [tuple(r) for r in kept]
    assert len(kept) + len(table.skipped) == len([r for r in reference if len(r) != 2 or any(r)])


@FUZZ
@given(records=st.lists(st.fixed_dictionaries({"text": st.text(max_size=15), "label": st.text(max_size=5)}),
                        min_size=1, max_size=6))
def test_own_jsonl_and_parquet_read_as_written(tmp_path_factory, records):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from bertvision.data.files import read_table

    folder = tmp_path_factory.mktemp("own")
    (folder / "train.jsonl").write_text("\n".join(json.dumps(r) for r in records) + "\n", encoding="utf-8")
    pq.write_table(pa.Table.from_pylist(records), folder / "train.parquet")
    for name in ("train.jsonl", "train.parquet"):
        table = read_table(folder / name)
        assert [dict(zip(table.columns, v)) for v in zip(*(table.values[c] for c in table.columns))] == records


@FUZZ
@given(data=st.binary(max_size=80), suffix=st.sampled_from([".csv", ".tsv", ".jsonl", ".parquet"]))
def test_own_files_of_any_bytes_read_or_end_in_one_line(tmp_path_factory, data, suffix):
    from bertvision.data.files import read_table

    path = tmp_path_factory.mktemp("ownb") / f"train{suffix}"
    path.write_bytes(data)
    try:
        table = read_table(path)
    except DataError as err:
        assert "\n" not in str(err) and str(path) in str(err)
        return
    assert all(len(v) == len(table.rows) for v in table.values.values())


WORD = st.text(st.characters(blacklist_categories=("Cs", "Zs", "Cc")), min_size=1, max_size=6)
TAG = st.sampled_from(["O", "B-PER", "I-PER", "B-LOC", "I-LOC"])


@FUZZ
@given(sentences=st.lists(st.lists(st.tuples(WORD, TAG), min_size=1, max_size=5), min_size=1, max_size=4))
def test_conll_reads_sentences_as_written_or_one_line(tmp_path_factory, sentences):
    from bertvision.data.conll import read_tagged

    path = tmp_path_factory.mktemp("conll") / "train.conll"
    path.write_text("\n\n".join("\n".join(f"{w} {t}" for w, t in s) for s in sentences) + "\n", encoding="utf-8")
    try:
        loaded = read_tagged(path, scheme="BIO")
    except DataError as err:  # an I- after O or another type is not BIO: refused naming the line
        assert "\n" not in str(err) and str(path) in str(err)
        return
    assert [list(s.words) for s in loaded] == [[w for w, _ in s] for s in sentences]
    assert [list(s.tags) for s in loaded] == [[t for _, t in s] for s in sentences]


@FUZZ
@given(data=st.binary(max_size=80), suffix=st.sampled_from([".conll", ".jsonl"]))
def test_conll_of_any_bytes_reads_or_ends_in_one_line(tmp_path_factory, data, suffix):
    from bertvision.data.conll import read_tagged

    path = tmp_path_factory.mktemp("conllb") / f"x{suffix}"
    path.write_bytes(data)
    try:
        loaded = read_tagged(path)
    except BertVisionError as err:  # DataError; ConfigError when the first line's one column is word and tag
        assert "\n" not in str(err) and str(path) in str(err)
        return
    assert all(len(s.words) == len(s.tags) for s in loaded)


@pytest.mark.parametrize("name", ["x.conll", "x.jsonl"])
def test_a_non_utf8_tagged_file_is_one_line_naming_its_line(tmp_path, name):
    """read_tagged's JSONL reader gave a UnicodeDecodeError traceback; CoNLL named no line."""
    from bertvision.data.conll import read_tagged

    path = tmp_path / name
    first = b'{"tokens": ["EU"], "tags": ["B-ORG"]}\n' if name.endswith(".jsonl") else b"EU B-ORG\n"
    path.write_bytes(first + b"caf\xe9 O\n")
    with pytest.raises(DataError, match=rf"{name}:2: not valid UTF-8"):
        read_tagged(path)
