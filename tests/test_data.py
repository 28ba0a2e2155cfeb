"""Tests for loading examples from local GLUE TSVs and SQuAD 2.0 JSON."""

import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from bertvision.data.readers import Answer, DataError, Example, LoadResult, load_examples
from bertvision.data.readers import _tfds_example
from bertvision.data.tasks import TASKS, get_task

# task, split, count, first uid, first label, start of the first text
FIXTURE_CASES = [
    ("cola", "train", 4, "train-0", 1, "Our friends won't buy"),
    ("cola", "dev", 3, "dev-0", 1, "The sailors rode"),
    ("cola", "test", 2, "0", None, "Bill whistled"),
    ("sst2", "train", 4, "train-0", 0, "hide new secretions"),
    ("sst2", "dev", 3, "dev-0", 1, "it 's a charming"),
    ("sst2", "test", 2, "0", None, "uneasy mishmash"),
    ("mrpc", "train", 3, "train-0", 1, "Amrozi accused"),
    ("mrpc", "dev", 2, "dev-0", 1, "He said the foodservice"),
    ("mrpc", "test", 2, "0", None, "PCCW's chief"),
    ("stsb", "train", 3, "0", 5.0, "A plane is taking off."),
    ("stsb", "dev", 3, "0", 5.0, "A man with a hard hat"),
    ("stsb", "test", 1, "0", None, "A girl is styling"),
    ("qqp", "train", 3, "133273", 0, "How is the life"),
    ("qqp", "dev", 2, "201359", 0, "Why are African"),
    ("qqp", "test", 1, "0", None, "Would the idea"),
    ("mnli", "train", 4, "0", 1, "Conceptually cream"),
    ("mnli", "dev_matched", 2, "0", 1, "The new rights"),
    ("mnli", "dev_mismatched", 3, "0", 2, "Your contribution"),
    ("mnli", "test_matched", 1, "0", None, "Hierbas"),
    ("mnli", "test_mismatched", 2, "0", None, "What have you decided"),
    ("mnli", "ax", 2, "0", None, "The cat sat on the mat."),
    ("qnli", "train", 3, "0", 1, "When did the third Digimon"),
    ("qnli", "dev", 2, "0", 0, "What came into force"),
    ("qnli", "test", 1, "0", None, "What organization"),
    ("rte", "train", 2, "0", 1, "No Weapons of Mass"),
    ("rte", "dev", 2, "0", 1, "Dana Reeve"),
    ("rte", "test", 1, "0", None, "Mangla was summoned"),
    ("wnli", "train", 4, "0", 1, "I stuck a pin"),
    ("wnli", "dev", 1, "0", 0, "The drain is clogged"),
    ("wnli", "test", 2, "0", None, "Maude and Dora"),
    ("squad_v2", "train", 3, "fx-train-1", None, "In what country"),
    ("squad_v2", "dev", 3, "fx-dev-1", None, "Where does the Rhine empty?"),
]


def _task_dir(fixtures_dir, task):
    return fixtures_dir / get_task(task).local_dir


@pytest.mark.parametrize("task, split, count, uid, label, text", FIXTURE_CASES)
def test_every_task_loads_its_fixture(fixtures_dir, task, split, count, uid, label, text):
    spec = get_task(task)
    result = load_examples(task, split, _task_dir(fixtures_dir, task))
    assert isinstance(result, LoadResult)
    assert result.skipped == []
    assert len(result.examples) == count == len(result)
    first = result.examples[0]
    assert isinstance(first, Example)
    assert (first.uid, first.label) == (uid, label)
    assert first.texts[0].startswith(text)
    assert len(first.texts) == len(spec.text_fields)
    assert len({e.uid for e in result.examples}) == count
    for example in result.examples:
        assert all(t.strip() for t in example.texts)
        if spec.kind == "classification" and label is not None:
            assert example.label in range(spec.num_labels)
        if spec.kind == "regression" and label is not None:
            assert isinstance(example.label, float) and 0.0 <= example.label <= 5.0


def test_fixtures_cover_every_task_and_split(fixtures_dir):
    covered = {(task, split) for task, split, *_ in FIXTURE_CASES}
    for name, spec in TASKS.items():
        for split in spec.splits:
            assert (name, split) in covered, (name, split)
            assert (_task_dir(fixtures_dir, name) / spec.splits[split]).is_file()


def test_labels_follow_label_names(fixtures_dir):
    def labels(task, split):
        result = load_examples(task, split, _task_dir(fixtures_dir, task))
        return [get_task(task).label_names[e.label] for e in result.examples]

    # String labels (QNLI/RTE/MNLI) and 0/1 labels (WNLI: 1 = entailment).
    assert labels("qnli", "train") == ["not_entailment", "not_entailment", "entailment"]
    assert labels("rte", "dev") == ["not_entailment", "entailment"]
    assert labels("mnli", "train") == ["neutral", "entailment", "entailment", "contradiction"]
    assert labels("wnli", "train") == ["entailment"] * 3 + ["not_entailment"]
    assert labels("cola", "train") == ["acceptable"] * 2 + ["unacceptable"] * 2
    stsb = load_examples("stsb", "dev", _task_dir(fixtures_dir, "stsb"))
    assert [e.label for e in stsb.examples] == [5.0, 4.75, 0.5]


def test_quotes_are_ordinary_characters(fixtures_dir):
    sst2 = load_examples("sst2", "dev", _task_dir(fixtures_dir, "sst2")).examples
    assert sst2[2].texts == ('" a bracing , unblinking work . ',)
    cola = load_examples("cola", "dev", _task_dir(fixtures_dir, "cola")).examples
    assert cola[2].texts == ('Sue said "hello" to him.',)


def test_data_root_resolves_task_folder(fixtures_dir):
    result = load_examples("mrpc", "dev", fixtures_dir)
    assert result.source == str(fixtures_dir / "glue" / "MRPC" / "dev.tsv")
    assert len(result.examples) == 2
    assert len(load_examples("squad_v2", "dev", fixtures_dir).examples) == 3


def test_squad_fixture_answers(fixtures_dir):
    result = load_examples("squad_v2", "dev", fixtures_dir / "squad2")
    first, second, impossible = result.examples
    assert first.texts[0] == "Where does the Rhine empty?"
    assert first.answers[0] == Answer("North Sea", first.texts[1].index("North Sea"))
    assert [a.text for a in first.answers] == [
        "North Sea", "the North Sea in the Netherlands", "North Sea"
    ]
    assert second.answers[0].text == "Graubünden"
    for answer in first.answers + second.answers:
        assert first.texts[1][answer.start : answer.end] == answer.text
    assert not first.is_impossible and first.label is None
    assert impossible.is_impossible and impossible.answers == ()


def test_limit_keeps_the_first_examples(fixtures_dir):
    result = load_examples("wnli", "train", _task_dir(fixtures_dir, "wnli"), limit=2)
    assert [e.uid for e in result.examples] == ["0", "1"]
    assert load_examples("squad_v2", "train", fixtures_dir / "squad2", limit=1).examples[0].uid == "fx-train-1"
    assert load_examples("sst2", "dev", _task_dir(fixtures_dir, "sst2"), limit=0).examples == []


# ---------------------------------------------------------------- real data


def test_real_sst2_counts(shared_data):
    folder = shared_data / "glue" / "SST-2"
    train = load_examples("sst2", "train", folder)
    dev = load_examples("sst2", "dev", folder)
    test = load_examples("sst2", "test", folder)
    assert (len(train), len(dev), len(test)) == (67_349, 872, 1_821)
    assert not (train.skipped or dev.skipped or test.skipped)
    assert Counter(e.label for e in dev.examples) == {0: 428, 1: 444}
    assert {e.label for e in test.examples} == {None}
    assert test.examples[-1].uid == "1820"


def test_real_mrpc_counts(shared_data):
    folder = shared_data / "glue" / "MRPC"
    train = load_examples("mrpc", "train", folder)
    dev = load_examples("mrpc", "dev", folder)
    test = load_examples("mrpc", "test", folder)
    assert (len(train), len(dev), len(test)) == (3_668, 408, 1_725)
    assert not (train.skipped or dev.skipped or test.skipped)
    assert Counter(e.label for e in train.examples) == {0: 1194, 1: 2474}
    assert Counter(e.label for e in dev.examples) == {0: 129, 1: 279}
    assert dev.examples[0].texts[1].startswith('"The foodservice pie business')


@pytest.mark.parametrize(
    "split, count, impossible",
    [("dev-v2.0.Rhine", 498, 208), ("dev-v2.0.Normans_CCT", 626, 333),
     ("dev", 498, 208), ("train", 4_719, 348)],  # train-v2.0.json: the first 10 official train articles
)
def test_real_squad_counts(shared_data, split, count, impossible):
    result = load_examples("squad_v2", split, shared_data / "squad2")
    assert len(result.examples) == count
    assert result.skipped == []
    assert sum(e.is_impossible for e in result.examples) == impossible
    for example in result.examples:
        assert bool(example.answers) != example.is_impossible
        for answer in example.answers:
            assert example.texts[1][answer.start : answer.end] == answer.text


# ---------------------------------------------------------------- malformed input


def test_missing_header_column_is_an_error(write_task_files):
    folder = write_task_files({"dev.tsv": "sentence\tlbl\na film\t1\n"})
    with pytest.raises(DataError) as err:
        load_examples("sst2", "dev", folder)
    message = str(err.value)
    assert f"{folder / 'dev.tsv'}:1" in message and "'label'" in message


def test_empty_file_is_an_error(write_task_files):
    folder = write_task_files({"test.tsv": ""})
    with pytest.raises(DataError, match="empty file"):
        load_examples("rte", "test", folder)


@pytest.mark.parametrize(
    "task, content, bad",
    [
        ("sst2", "sentence\tlabel\na film\t1\nanother film\t2\n", "'2'"),
        ("qnli", "index\tquestion\tsentence\tlabel\n0\tq?\ts.\tentailed\n", "'entailed'"),
        ("mrpc", "Quality\t#1 ID\t#2 ID\t#1 String\t#2 String\n\t1\t2\ta\tb\n", "''"),
        ("stsb", "index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\tsentence1\tsentence2\tscore\n"
                 "0\tg\tf\ty\t1\tnone\tnone\ta\tb\thigh\n", "'high'"),
    ],
)
def test_unknown_label_names_file_line_and_value(write_task_files, task, content, bad):
    folder = write_task_files({"train.tsv": content})
    with pytest.raises(DataError) as err:
        load_examples(task, "train", folder)
    message = str(err.value)
    line = content.count("\n")
    assert f"{folder / 'train.tsv'}:{line}" in message
    assert bad in message


def test_short_long_and_empty_rows_are_counted_skips(write_task_files):
    rows = [
        "index\tsentence1\tsentence2\tlabel",
        "0\tA cat sat.\tA cat sat down.\tentailment",
        "1\tonly one sentence",
        "2\t \tA text.\tentailment",
        "3\tA dog ran.\t\tnot_entailment",
        "4\tA\tB\tentailment\textra",
        "",
        "6\tA bird sang.\tA bird made a sound.\tentailment",
    ]
    folder = write_task_files({"dev.tsv": "\n".join(rows) + "\n"})
    result = load_examples("rte", "dev", folder)
    assert [e.uid for e in result.examples] == ["0", "6"]
    path = folder / "dev.tsv"
    where = [w for w, _ in result.skipped]
    assert where == [f"{path}:{n}" for n in (3, 4, 5, 6, 7)]
    reasons = [r for _, r in result.skipped]
    assert reasons[0].startswith("too few columns: 2")
    assert reasons[1] == "empty text in column 'sentence1'"
    assert reasons[2] == "empty text in column 'sentence2'"
    assert reasons[3].startswith("too many columns: 5")
    assert reasons[4].startswith("too few columns: 1")


def test_row_number_uids_count_skipped_rows(write_task_files):
    folder = write_task_files({"train.tsv": "sentence\tlabel\nshort\n\t0\ngood film\t1\n"})
    result = load_examples("sst2", "train", folder)
    assert [e.uid for e in result.examples] == ["train-2"]
    assert len(result.skipped) == 2


def test_bom_and_crlf_are_tolerated(write_task_files):
    content = "\ufeffsentence\tlabel\r\na fine film \t1\r\na dull film\t0\r\n".encode("utf-8")
    result = load_examples("sst2", "train", write_task_files({"train.tsv": content}))
    assert [(e.texts, e.label) for e in result.examples] == [
        (("a fine film ",), 1), (("a dull film",), 0)
    ]


def test_invalid_utf8_names_the_line(write_task_files):
    folder = write_task_files({"dev.tsv": b"sentence\tlabel\ngood\t1\nbad \xff\t0\n"})
    with pytest.raises(DataError, match=r"dev\.tsv:3: not valid UTF-8"):
        load_examples("sst2", "dev", folder)


def test_missing_file_names_path_and_expected_name(tmp_path):
    with pytest.raises(DataError) as err:
        load_examples("mnli", "dev_matched", tmp_path)
    message = str(err.value)
    assert "'dev_matched.tsv'" in message and str(tmp_path) in message
    with pytest.raises(DataError, match="'train-v2.0.json'"):
        load_examples("squad_v2", "train", tmp_path)


def test_unknown_split_lists_known_splits(fixtures_dir):
    with pytest.raises(DataError) as err:
        load_examples("mnli", "dev", _task_dir(fixtures_dir, "mnli"))
    assert "dev_matched" in str(err.value) and "dev_mismatched" in str(err.value)
    with pytest.raises(DataError, match="no file 'dev-v2.0.Nile.json'"):
        load_examples("squad_v2", "dev-v2.0.Nile", fixtures_dir / "squad2")
    with pytest.raises(ValueError, match="known tasks"):
        load_examples("imdb", "train", fixtures_dir)


def _squad_file(qas, context="The Rhine empties into the North Sea."):
    data = {"version": "v2.0", "data": [{"title": "T", "paragraphs": [{"context": context, "qas": qas}]}]}
    return json.dumps(data)


def test_squad_bad_answer_start_drops_answer_or_question(write_task_files):
    qas = [
        {"id": "q1", "question": "Where?", "is_impossible": False,
         "answers": [{"text": "North Sea", "answer_start": 27}, {"text": "North Sea", "answer_start": 3}]},
        {"id": "q2", "question": "Into what?", "is_impossible": False,
         "answers": [{"text": "North Sea", "answer_start": 99}]},
        {"id": "q3", "question": "What?", "is_impossible": False, "answers": []},
        {"id": "q4", "question": "Who?", "is_impossible": True, "answers": [],
         "plausible_answers": [{"text": "Rhine", "answer_start": 4}]},
    ]
    folder = write_task_files({"dev-v2.0.json": _squad_file(qas)})
    result = load_examples("squad_v2", "dev", folder)
    assert [e.uid for e in result.examples] == ["q1", "q4"]
    assert result.examples[0].answers == (Answer("North Sea", 27),)
    path = folder / "dev-v2.0.json"
    where = [w for w, _ in result.skipped]
    assert where == [f"{path}:q1", f"{path}:q2", f"{path}:q2", f"{path}:q3"]
    reasons = [r for _, r in result.skipped]
    assert reasons[0].startswith("answer 1 dropped: context[3:12] is ' Rhine em', not the answer text 'North Sea'")
    assert "none of its answers matches" in reasons[2]
    assert reasons[3] == "answerable question has no answers"


def test_squad_non_json_is_an_error(write_task_files):
    folder = write_task_files({"dev-v2.0.json": "index\tsentence\n0\tnot json\n"})
    with pytest.raises(DataError, match=r"dev-v2\.0\.json:1:1: not a SQuAD JSON file"):
        load_examples("squad_v2", "dev", folder)


def test_squad_schema_error_names_the_field(write_task_files):
    qas = [{"question": "Where?", "answers": [], "is_impossible": True}]
    folder = write_task_files({"dev-v2.0.json": _squad_file(qas)})
    with pytest.raises(DataError, match=r"data\[0\]\.paragraphs\[0\]\.qas\[0\]: missing field 'id'"):
        load_examples("squad_v2", "dev", folder)
    folder = write_task_files({"train-v2.0.json": json.dumps({"version": "v2.0"})}, name="other")
    with pytest.raises(DataError, match="top level: missing field 'data'"):
        load_examples("squad_v2", "train", folder)


def test_squad_split_name_resolves_to_json_file(write_task_files):
    qas = [{"id": "x1", "question": "Where?", "is_impossible": False,
            "answers": [{"text": "North Sea", "answer_start": 27}]}]
    folder = write_task_files({"dev-v2.0.Rhine_small.json": _squad_file(qas)})
    result = load_examples("squad_v2", "dev-v2.0.Rhine_small", folder)
    assert [e.uid for e in result.examples] == ["x1"]
    assert result.split == "dev-v2.0.Rhine_small"


# ---------------------------------------------------------------- TFDS mapping


def test_tfds_records_map_to_the_same_examples():
    mnli = _tfds_example(
        get_task("mnli"), "dev_matched",
        {"idx": 3, "premise": b"A man sleeps.", "hypothesis": b"A man is awake.", "label": 2},
        "tfds:glue/mnli", [],
    )
    assert mnli == Example(uid="3", texts=("A man sleeps.", "A man is awake."), label=2)
    sst2 = _tfds_example(get_task("sst2"), "test", {"idx": 7, "sentence": b"ok .", "label": -1}, "s", [])
    assert sst2 == Example(uid="7", texts=("ok .",), label=None)
    sst2_train = _tfds_example(get_task("sst2"), "train", {"idx": 7, "sentence": b"ok .", "label": 1}, "s", [])
    assert sst2_train.uid == "train-7"
    stsb = _tfds_example(get_task("stsb"), "test", {"idx": 0, "sentence1": b"a", "sentence2": b"b", "label": -1.0}, "s", [])
    assert stsb.label is None
    context = "The Rhine empties into the North Sea."
    skipped = []
    squad = _tfds_example(
        get_task("squad_v2"), "dev",
        {"id": b"q1", "question": b"Where?", "context": context.encode(), "is_impossible": False,
         "answers": {"text": [b"North Sea", b"Sea"], "answer_start": [27, 0]}},
        "tfds:squad/v2.0", skipped,
    )
    assert squad.answers == (Answer("North Sea", 27),) and len(skipped) == 1


def test_importing_data_does_not_load_tensorflow():
    """Reading task files needs no TensorFlow (tensorflow-datasets loads it only when used)."""
    code = (
        "import sys, bertvision.data.readers;"
        "assert 'tensorflow' not in sys.modules"
    )
    repo = Path(__file__).resolve().parent.parent
    subprocess.run([sys.executable, "-c", code], check=True, cwd=repo)


def test_squad_without_is_impossible_infers_it_from_the_answers(write_task_files):
    """SQuAD 1.1-style files carry no is_impossible: a question without answers is unanswerable."""
    qas = [{"id": f"a{i}", "question": "Where?", "answers": [{"text": "North Sea", "answer_start": 27}]}
           for i in range(16)]
    qas += [{"id": f"n{i}", "question": "Who?", "answers": []} for i in range(9)]
    folder = write_task_files({"dev-v2.0.json": _squad_file(qas)})
    result = load_examples("squad_v2", "dev", folder)
    assert len(result.examples) == 25 and result.skipped == []
    assert sum(e.is_impossible for e in result.examples) == 9


def test_too_many_skipped_records_stop_with_a_clear_error(write_task_files):
    rows = ["sentence\tlabel"] + [f"film {i}\t1" for i in range(95)] + ["broken"] * 5
    result = load_examples("sst2", "train", write_task_files({"train.tsv": "\n".join(rows) + "\n"}))
    assert len(result.examples) == 95 and len(result.skipped) == 5
    report = result.skipped_report()
    assert report.splitlines()[0].startswith("sst2/train: skipped 5 of 100 records in ")
    assert "too few columns" in report.splitlines()[1] and report.splitlines()[-1] == "  ... and 2 more"
    with pytest.raises(DataError, match=r"sst2/train: 5 of 100 records skipped \(5.0% > --max-skipped 0.01\)"):
        result.check_skipped(0.01)
    assert result.check_skipped(0.05) is result and result.check_skipped(None) is result


def test_extract_prints_skipped_records_and_stops_over_the_limit(write_task_files, tmp_path):
    from pipelines.extract import main as extract_main
    from tests.stores import run_main

    rows = ["sentence\tlabel"] + [f"film {i}\t{i % 2}" for i in range(18)] + ["broken", "\t1"]
    folder = write_task_files({"dev.tsv": "\n".join(rows) + "\n"}, name="SST-2")
    common = ["--task", "sst2", "--data-dir", folder, "--split", "dev", "--no-progress", "--batch-size", "8"]
    code, _, err = run_main(extract_main, *common, "--out", tmp_path / "a")
    assert code == 2 and "sst2/dev: skipped 2 of 20 records" in err
    assert err.strip().splitlines()[-1].startswith("error: sst2/dev: 2 of 20 records skipped (10.0% > --max-skipped")
    assert not (tmp_path / "a").exists()
    code, out, err = run_main(extract_main, *common, "--out", tmp_path / "b", "--max-skipped", "0.2")
    assert code == 0, err[-2000:]
    assert "sst2/dev: skipped 2 of 20 records" in err and "dev: 18 records from 18 examples" in out


def test_joined_splits_concatenate_files_in_order(shared_data):
    squad = shared_data / "squad2"
    joined = load_examples("squad_v2", "train+dev-v2.0.Normans_CCT", squad)
    train = load_examples("squad_v2", "train", squad)
    normans = load_examples("squad_v2", "dev-v2.0.Normans_CCT", squad)
    assert len(joined) == len(train) + len(normans) == 4719 + 626
    assert [e.uid for e in joined.examples] == [e.uid for e in train.examples + normans.examples]
    assert joined.split == "train+dev-v2.0.Normans_CCT" and joined.source.count("+") == 1
    assert len(load_examples("squad_v2", "train+dev-v2.0.Normans_CCT", squad, limit=5)) == 5
    with pytest.raises(DataError, match="need distinct uids"):
        load_examples("squad_v2", "dev+dev-v2.0.Rhine", squad)  # the same file twice
    with pytest.raises(DataError, match="distinct split names"):
        load_examples("squad_v2", "train+", squad)
    with pytest.raises(DataError, match="no split 'nope'"):
        load_examples("sst2", "train+nope", shared_data / "glue" / "SST-2")
