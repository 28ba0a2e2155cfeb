"""Tests for the task registry."""

import dataclasses

import pytest

from bertvision.data.tasks import TASKS, TaskSpec, TsvLayout, get_task

ALL_TASKS = ("squad_v2", "cola", "sst2", "mrpc", "stsb", "qqp", "mnli", "qnli", "rte", "wnli")


def test_registry_holds_exactly_the_ten_tasks():
    assert tuple(TASKS) == ALL_TASKS
    for name, spec in TASKS.items():
        assert isinstance(spec, TaskSpec) and spec.name == name
        assert get_task(name) is spec
        assert get_task(spec) is spec


def test_unknown_task_names_the_known_ones():
    with pytest.raises(ValueError) as err:
        get_task("sst-2")
    message = str(err.value)
    assert "'sst-2'" in message
    for name in ALL_TASKS:
        assert name in message


def test_spec_is_frozen_and_hashable():
    spec = get_task("sst2")
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.name = "other"
    assert {spec: 1}[get_task("sst2")] == 1


@pytest.mark.parametrize(
    "name, label_names, label_format",
    [
        ("cola", ("unacceptable", "acceptable"), "index"),
        ("sst2", ("negative", "positive"), "index"),
        ("mrpc", ("not_equivalent", "equivalent"), "index"),
        ("qqp", ("not_duplicate", "duplicate"), "index"),
        ("mnli", ("entailment", "neutral", "contradiction"), "name"),
        ("qnli", ("entailment", "not_entailment"), "name"),
        ("rte", ("entailment", "not_entailment"), "name"),
        ("wnli", ("not_entailment", "entailment"), "index"),
    ],
)
def test_glue_label_names_and_formats(name, label_names, label_format):
    spec = get_task(name)
    assert spec.kind == "classification"
    assert spec.label_names == label_names
    assert spec.label_format == label_format
    assert spec.num_labels == len(label_names)


def test_regression_and_span_tasks():
    stsb = get_task("stsb")
    assert (stsb.kind, stsb.label_names, stsb.num_labels) == ("regression", (), 1)
    squad = get_task("squad_v2")
    assert squad.kind == "span" and squad.label_names == ()
    assert squad.text_fields == ("question", "context")
    assert squad.num_labels == 2


@pytest.mark.parametrize(
    "name, metrics, main",
    [
        ("cola", ("matthews_corrcoef",), "matthews_corrcoef"),
        ("sst2", ("accuracy",), "accuracy"),
        ("mrpc", ("accuracy", "f1"), "f1"),
        ("stsb", ("pearson", "spearmanr"), "pearson"),
        ("qqp", ("accuracy", "f1"), "f1"),
        ("mnli", ("accuracy",), "accuracy"),
        ("qnli", ("accuracy",), "accuracy"),
        ("rte", ("accuracy",), "accuracy"),
        ("wnli", ("accuracy",), "accuracy"),
    ],
)
def test_glue_metrics(name, metrics, main):
    spec = get_task(name)
    assert spec.metrics == metrics
    assert spec.main_metric == main


def test_squad_metrics_are_the_official_names():
    spec = get_task("squad_v2")
    for name in ("exact", "f1", "HasAns_exact", "HasAns_f1", "NoAns_exact", "NoAns_f1"):
        assert name in spec.metrics
    assert spec.main_metric == "f1"


def test_tfds_names_and_local_dirs():
    expected_dirs = {
        "cola": "CoLA", "sst2": "SST-2", "mrpc": "MRPC", "stsb": "STS-B", "qqp": "QQP",
        "mnli": "MNLI", "qnli": "QNLI", "rte": "RTE", "wnli": "WNLI",
    }
    for name, folder in expected_dirs.items():
        spec = get_task(name)
        assert spec.tfds_name == f"glue/{name}"
        assert spec.local_dir == f"glue/{folder}"
    assert get_task("squad_v2").tfds_name == "squad/v2.0"
    assert get_task("squad_v2").local_dir == "squad2"


def test_splits_and_eval_splits():
    mnli = get_task("mnli")
    assert dict(mnli.splits) == {
        "train": "train.tsv",
        "dev_matched": "dev_matched.tsv",
        "dev_mismatched": "dev_mismatched.tsv",
        "test_matched": "test_matched.tsv",
        "test_mismatched": "test_mismatched.tsv",
        "ax": "diagnostic.tsv",  # GLUE's diagnostic set, predicted by the MNLI model
    }
    assert mnli.submission_files["ax"] == "AX.tsv"
    assert mnli.eval_splits == ("dev_matched", "dev_mismatched")
    assert mnli.eval_split_labels["dev_matched"] == "matched"
    assert mnli.tfds_splits["dev_mismatched"] == "validation_mismatched"
    squad = get_task("squad_v2")
    assert dict(squad.splits) == {"train": "train-v2.0.json", "dev": "dev-v2.0.json"}
    assert squad.tfds_splits == {"train": "train", "dev": "validation"}
    for name in ALL_TASKS:
        if name != "mnli":
            assert get_task(name).eval_splits == ("dev",)
        if name not in ("mnli", "squad_v2"):
            assert dict(get_task(name).splits) == {
                "train": "train.tsv", "dev": "dev.tsv", "test": "test.tsv"
            }


def test_glue_tsv_layouts_as_published():
    cola = get_task("cola").tsv_layouts
    assert not cola["train"].has_header and cola["test"].has_header
    assert cola["train"].columns == ("source", "label", "original_label", "sentence")
    assert cola["test"].columns == ("index", "sentence")
    assert get_task("sst2").tsv_layouts["dev"].columns == ("sentence", "label")
    mrpc = get_task("mrpc").tsv_layouts
    assert mrpc["train"].columns == ("Quality", "#1 ID", "#2 ID", "#1 String", "#2 String")
    assert mrpc["test"].columns == ("index", "#1 ID", "#2 ID", "#1 String", "#2 String")
    stsb = get_task("stsb").tsv_layouts
    assert stsb["train"].columns[-3:] == ("sentence1", "sentence2", "score")
    assert len(stsb["train"].columns) == 10 and len(stsb["test"].columns) == 9
    qqp = get_task("qqp").tsv_layouts
    assert qqp["train"].columns == ("id", "qid1", "qid2", "question1", "question2", "is_duplicate")
    assert qqp["test"].columns == ("id", "question1", "question2")
    mnli = get_task("mnli").tsv_layouts
    assert mnli["train"].columns[-2:] == ("label1", "gold_label")
    assert mnli["dev_matched"].columns[-6:] == (
        "label1", "label2", "label3", "label4", "label5", "gold_label"
    )
    assert mnli["test_mismatched"].columns[-2:] == ("sentence1", "sentence2")
    assert mnli["train"].label_column == "gold_label"
    assert get_task("qnli").tsv_layouts["train"].columns == ("index", "question", "sentence", "label")
    for name in ("rte", "wnli"):
        layouts = get_task(name).tsv_layouts
        assert layouts["train"].columns == ("index", "sentence1", "sentence2", "label")
        assert layouts["test"].columns == ("index", "sentence1", "sentence2")
    for name, spec in TASKS.items():
        for split, layout in spec.tsv_layouts.items():
            unlabeled = split.startswith("test") or split == "ax"
            assert (layout.label_column is None) == unlabeled, (name, split)


def test_layout_rejects_unknown_column():
    with pytest.raises(ValueError, match="'label'"):
        TsvLayout(columns=("sentence",), has_header=True, text_columns=("sentence",),
                  label_column="label")


def test_spec_validation_names_the_bad_field():
    spec = get_task("sst2")
    with pytest.raises(ValueError, match="main_metric 'f1'"):
        dataclasses.replace(spec, main_metric="f1")
    with pytest.raises(ValueError, match="kind 'ranking'"):
        dataclasses.replace(spec, kind="ranking")
