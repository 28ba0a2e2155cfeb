"""Your own data: files of any format and columns as a task (bertvision.data.files),
the task spec, the metrics by kind, and the whole flow from a CSV to predictions.

The unit tests write their own small fixtures (one per format, encoding and
error); the end-to-end tests run the real commands on small seeded samples of
../shared/data/banking77 and goemotions."""

import json

import numpy as np
import pandas as pd
import pytest

from bertvision.data.files import DataSource, holds_task_columns, read_examples, read_source, read_table
from bertvision.data.tasks import TASKS, TaskSpec, get_task, user_task
from bertvision.errors import ConfigError, DataError
from bertvision.metrics import best_thresholds, compute_metrics, per_class_metrics

ROWS = [("I am still waiting on my card?", "card_arrival"), ("How do I top up?", "top_up"),
        ("Card not here yet", "card_arrival"), ("top-up failed", "top_up"),
        ("My card, where is it", "card_arrival"), ("Why did my top up fail?", "reverted_card_payment?")]


def _csv(path, rows=ROWS, header="text,category", newline="\n", encoding="utf-8"):
    lines = [header] + [f'"{t}",{c}' for t, c in rows]
    path.write_bytes(newline.join(lines).encode(encoding) + newline.encode())
    return path


def _source(tmp_path, **kw):
    kw.setdefault("splits", {"train": "train.csv"})
    return DataSource(text_column=kw.pop("text_column", "text"), label_columns=kw.pop("label_columns", ["category"]),
                      data_dir=str(tmp_path), name="t", **kw)


# ---------------------------------------------------------------- formats


def test_csv_with_bom_crlf_and_quoted_newlines(tmp_path):
    path = tmp_path / "train.csv"
    path.write_bytes(b'\xef\xbb\xbftext,category\r\n"line one\r\nline two, with comma",a\r\n"say ""hi""",b\r\n')
    table = read_table(path)
    assert table.columns == ["text", "category"]
    assert table.values["text"] == ["line one\r\nline two, with comma", 'say "hi"']
    assert table.rows == [2, 3]  # rows as a spreadsheet shows them: the header is row 1 (a record is one row)


def test_blank_lines_are_no_records_and_rows_count_them(tmp_path):
    path = tmp_path / "train.csv"
    path.write_text("text,category\na,x\n\nb,y\nc,y,z\n\n")
    table = read_table(path)
    assert table.values == {"text": ["a", "b"], "category": ["x", "y"]} and table.rows == [2, 4]
    assert table.skipped == [(f"{path}: row 5", "3 field(s), expected 2 (text, category)")]


def test_tsv_without_header_by_position_keeps_quotes(tmp_path):
    path = tmp_path / "train.tsv"
    path.write_text('He said "no\tway\n"quoted" text\tother\n')
    table = read_table(path, header=False)
    assert table.columns == ["0", "1"] and table.values["0"] == ['He said "no', '"quoted" text']
    assert table.column("1") == "1" and table.rows == [1, 2]


def test_jsonl_and_parquet_read_the_same_rows(tmp_path):
    rows = [{"text": t, "category": c} for t, c in ROWS]
    (tmp_path / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    pd.DataFrame(rows).to_parquet(tmp_path / "train.parquet")
    for name in ("train.jsonl", "train.parquet"):
        data = read_source(_source(tmp_path, splits={"train": name}))
        assert [e.texts[0] for e in data.splits["train"].examples] == [t for t, _ in ROWS]
        assert data.spec.label_names == ("card_arrival", "reverted_card_payment?", "top_up")


def test_latin1_needs_its_encoding_and_a_bad_byte_names_the_line(tmp_path):
    _csv(tmp_path / "train.csv", ROWS + [("café crème", "top_up")], encoding="latin-1")
    with pytest.raises(DataError, match=r"train\.csv: line 8: not valid utf-8.*--encoding"):
        read_source(_source(tmp_path))
    data = read_source(_source(tmp_path, encoding="latin-1"))
    assert data.splits["train"].examples[-1].texts == ("café crème",)


# ---------------------------------------------------------------- errors


def test_unknown_column_names_file_and_columns(tmp_path):
    _csv(tmp_path / "train.csv")
    with pytest.raises(DataError, match=r"train\.csv: no column 'label'; its columns are \['text', 'category'\]"):
        read_source(_source(tmp_path, label_columns=["label"]))
    with pytest.raises(DataError, match="no column 'body'"):
        read_source(_source(tmp_path, text_column="body"))


def test_empty_text_is_refused_with_its_rows(tmp_path):
    _csv(tmp_path / "train.csv", ROWS[:3] + [("  ", "top_up"), ("", "top_up")])
    with pytest.raises(DataError, match=r"train\.csv: empty text in column 'text' at row\(s\) 5, 6"):
        read_source(_source(tmp_path))


def test_label_unseen_in_train_names_label_row_and_column(tmp_path):
    _csv(tmp_path / "train.csv")
    _csv(tmp_path / "test.csv", [("hello", "top_up"), ("lost card", "lost_or_stolen_card")])
    with pytest.raises(DataError, match=r"test\.csv: row 3, column 'category': label 'lost_or_stolen_card' is not one "
                                        r"of the 3 labels of train"):
        read_source(_source(tmp_path, splits={"train": "train.csv", "test": "test.csv"}))


def test_ragged_rows_are_counted_and_capped(tmp_path):
    path = tmp_path / "train.csv"
    path.write_text("text,category\nfine,a\ntoo,many,fields\nok,b\nalso,b\n")
    with pytest.raises(DataError, match=r"train\.csv: row 3: 3 field\(s\), expected 2 \(text, category\); 1 of 4 rows "
                                        r"of train are malformed \(> --max-skipped 0\.01\)"):
        read_source(_source(tmp_path))
    data = read_source(_source(tmp_path, max_skipped=0.5))
    assert [e.uid for e in data.splits["train"].examples] == ["train-2", "train-4", "train-5"]
    assert data.splits["train"].skipped == [(f"{path}: row 3", "3 field(s), expected 2 (text, category)")]


def test_bad_score_and_empty_label(tmp_path):
    (tmp_path / "train.csv").write_text("text,score\na,1.5\nb,x\n")
    with pytest.raises(DataError, match=r"row 3, column 'score': 'x' is not a number"):
        read_source(_source(tmp_path, label_columns=["score"], kind="regression"))
    (tmp_path / "train.csv").write_text("text,category\na,x\nb,\nc,y\n")
    with pytest.raises(DataError, match=r"row 3, column 'category': empty label"):
        read_source(_source(tmp_path))


def test_task_file_and_config_errors(tmp_path):
    _csv(tmp_path / "train.csv")
    (tmp_path / "task.json").write_text(json.dumps({"text_column": "text", "label_column": "category",
                                                    "splits": {"train": "train.csv"}, "data_dir": ".",
                                                    "dev_fraction": 0.5}))
    source = DataSource.from_task_file(tmp_path / "task.json", name="mine")
    assert source.label_columns == ["category"] and source.data_dir == str(tmp_path / ".") and source.name == "mine"
    (tmp_path / "bad.json").write_text('{"text_column": "text", "label_columns": ["c"], "splits": {"train": "x"}, '
                                       '"colour": 1}')
    with pytest.raises(ConfigError, match=r"bad\.json: .*colour"):
        DataSource.from_task_file(tmp_path / "bad.json")
    with pytest.raises(ConfigError, match="--kind"):
        _source(tmp_path, kind="ranking")
    with pytest.raises(ConfigError, match="no train split"):
        _source(tmp_path, splits={"test": "train.csv"})


# ---------------------------------------------------------------- splits and labels


def test_dev_fraction_is_stratified_seeded_and_recorded(shared_data):
    source = DataSource(splits={"train": "train.csv"}, text_column="text", label_columns=["category"],
                        dev_fraction=0.1, seed=3, data_dir=str(shared_data / "banking77"), name="banking77")
    data = read_source(source)
    train, dev = data.splits["train"].examples, data.splits["dev"].examples
    assert len(train) + len(dev) == 10_003 and len(dev) == 1000 and len(data.spec.label_names) == 77
    assert not {e.uid for e in train} & {e.uid for e in dev}
    dev_counts = np.bincount([e.label for e in dev], minlength=77)
    all_counts = dev_counts + np.bincount([e.label for e in train], minlength=77)
    assert np.all(np.abs(dev_counts - 0.1 * all_counts) <= 1)  # every intent in proportion
    assert data.provenance["dev_split"] == {"from": "train", "fraction": 0.1, "seed": 3, "stratified": True,
                                           "dev_examples": 1000}
    again = read_source(source)
    assert [e.uid for e in again.splits["dev"].examples] == [e.uid for e in dev]
    assert dev[0].uid.startswith("train-")  # traces back to its row of train.csv


def test_multi_label_separator_json_list_and_ids(tmp_path, shared_data):
    (tmp_path / "train.csv").write_text('text,tags\na,"x,y"\nb,"[""z""]"\nc,y\n')
    data = read_source(_source(tmp_path, label_columns=["tags"], kind="multi_label"))
    assert data.spec.label_names == ("x", "y", "z") and data.spec.kind == "multi_label"
    assert [e.label for e in data.splits["train"].examples] == [[1, 1, 0], [0, 0, 1], [0, 1, 0]]
    (tmp_path / "train.csv").write_text('text,tags\na,x|y\nb,z\n')
    data = read_source(_source(tmp_path, label_columns=["tags"], kind="multi_label", label_separator="|"))
    assert data.splits["train"].examples[0].label == [1, 1, 0]
    go = shared_data / "goemotions"
    data = read_source(DataSource(splits={"train": "dev.tsv"}, text_column="0", label_columns=["1"], id_column="2",
                                  kind="multi_label", header=False, label_names=str(go / "labels.txt"),
                                  data_dir=str(go), name="goemotions"))
    second = data.splits["train"].examples[1]
    assert len(data.spec.label_names) == 28 and second.uid == "ee84bjg"
    assert [data.spec.label_names[i] for i, v in enumerate(second.label) if v] == ["approval", "neutral"]


def test_several_label_columns_make_several_heads(tmp_path):
    (tmp_path / "train.csv").write_text("text,topic,score\na,x,0.5\nb,y,1\nc,x,2\n")
    data = read_source(_source(tmp_path, label_columns=["topic", "score"], kind={"topic": "classification",
                                                                                 "score": "regression"}))
    topic, score = data.specs
    assert (topic.kind, topic.label_key, topic.main_metric) == ("classification", "label/topic", "accuracy")
    assert (score.kind, score.label_key, score.main_metric, score.label_names) == \
        ("regression", "label/score", "pearson", ())
    assert data.splits["train"].examples[2].labels == {"topic": 0, "score": 2.0}


def test_read_examples_reads_another_file_of_the_task(tmp_path):
    _csv(tmp_path / "train.csv")
    spec = read_source(_source(tmp_path)).spec
    (tmp_path / "new.csv").write_text("text\nwhere is my card\n")
    loaded = read_examples(tmp_path / "new.csv", spec)
    assert [(e.uid, e.texts, e.label) for e in loaded.examples] == [("new-2", ("where is my card",), None)]
    (tmp_path / "new.jsonl").write_text('{"text": "top up?", "category": "top_up"}\n')
    (tmp_path / "plain.jsonl").write_text('{"id": "a", "body": "top up?"}\n')
    assert holds_task_columns(tmp_path / "new.jsonl", spec) and not holds_task_columns(tmp_path / "plain.jsonl", spec)
    assert read_examples(tmp_path / "new.jsonl", spec).examples[0].label == spec.label_names.index("top_up")


def test_header_less_ids_and_names_read_back_from_the_spec(tmp_path, shared_data):
    go = shared_data / "goemotions"
    spec = read_source(DataSource(splits={"train": "dev.tsv"}, text_column="0", label_columns=["1"], id_column="2",
                                  kind="multi_label", header=False, label_names=str(go / "labels.txt"),
                                  data_dir=str(go), name="goemotions")).spec
    spec = TaskSpec.from_dict(json.loads(json.dumps(spec.to_dict())))  # as a run keeps it
    examples = read_examples(go / "test.tsv", spec).examples
    assert len(examples) == 5427 and examples[0].uid == "eecwqtt" and examples[0].label[25] == 1


# ---------------------------------------------------------------- specs and metrics


@pytest.mark.parametrize("name", sorted(TASKS))
def test_every_preset_round_trips_as_data(name):
    spec = get_task(name)
    assert get_task(json.loads(json.dumps(spec.to_dict()))) == spec and spec.is_preset


def test_user_task_spec():
    spec = user_task("b", "multi_label", ("text",), "tags", ("x", "y"))
    assert spec.metrics == ("micro_f1", "macro_f1", "subset_accuracy") and not spec.is_preset
    assert TaskSpec.from_dict(spec.to_dict()) == spec
    with pytest.raises(ConfigError, match="unknown field"):
        TaskSpec.from_dict({**spec.to_dict(), "colour": 1})
    with pytest.raises(ConfigError, match="--kind"):
        user_task("b", "span", ("text",), "tags")


def test_metrics_by_kind_match_scikit_learn():
    from sklearn import metrics as skm

    pred, gold = [0, 1, 2, 2, 1], [0, 1, 1, 2, 2]
    out = compute_metrics(user_task("c", "classification", ("t",), "l", ("a", "b", "c")), pred, gold)
    assert out == {"accuracy": 0.6, "macro_f1": pytest.approx(skm.f1_score(gold, pred, average="macro")),
                   "micro_f1": pytest.approx(0.6)}
    hot_pred, hot_gold = np.array([[1, 0, 1], [0, 1, 0]]), np.array([[1, 0, 0], [0, 1, 0]])
    out = compute_metrics(["micro_f1", "macro_f1", "subset_accuracy"], hot_pred, hot_gold)
    assert out["subset_accuracy"] == 0.5 and out["micro_f1"] == pytest.approx(0.8)
    assert compute_metrics(["mse"], [1.0, 3.0], [1.0, 1.0]) == {"mse": 2.0}
    rows = per_class_metrics(pred, gold, ["a", "b", "c"])
    assert [r["support"] for r in rows] == [1, 2, 2] and rows[0] == {"label": "a", "precision": 1.0, "recall": 1.0,
                                                                      "f1": 1.0, "support": 1}
    # label 0: every threshold in (0.2, 0.3] is perfect, the one nearest 0.5 wins; label 1 has no positive: 0.5
    assert best_thresholds([[0.3, 0.9], [0.2, 0.4]], [[1, 0], [0, 0]]).tolist() == [0.3, 0.5]
    assert best_thresholds([[0.9], [0.6], [0.1]], [[1], [0], [0]]).tolist() == [0.65]


def test_a_text_pair_column_makes_a_pair_task(tmp_path):
    (tmp_path / "train.csv").write_text("q,a,same\nWhere is it?,It is here.,yes\nWho?,Me.,no\n")
    data = read_source(_source(tmp_path, text_column="q", text_pair_column="a", label_columns=["same"]))
    assert data.spec.text_fields == ("text", "text_pair") and data.spec.text_columns == ("q", "a")
    assert data.splits["train"].examples[0].texts == ("Where is it?", "It is here.")
    from bertvision.inference.inputs import input_fields

    assert input_fields(data.spec) == ("text", "text_pair")
