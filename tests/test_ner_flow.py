"""Token classification end to end with the real commands on tens of CoNLL-2003
sentences (../shared/data/conll2003): extract (CoNLL, BIO) -> fit -> predict
from the store, from the test file and from raw text; the CoNLL file written
scores under seqeval exactly as printed; bad files leave nothing behind."""

import json

import pytest
from seqeval.metrics import f1_score, precision_score, recall_score

from pipelines.extract import main as extract_main
from pipelines.finetune import main as finetune_main
from pipelines.fit import main as fit_main
from pipelines.predict import main as predict_main
from tests.stores import run_main

SMALL = ("--max-seq-len", "32", "--no-progress", "--no-jit")  # 32: long sentences take several windows


def _head(src, dst, sentences: int) -> None:
    """The first `sentences` sentences of a CoNLL file."""
    blocks = src.read_text().split("\n\n")[:sentences]
    dst.write_text("\n\n".join(blocks) + "\n\n")


@pytest.fixture(scope="module")
def ner(module_tmp, shared_data):
    root = module_tmp("ner")
    for name, split, n in (("eng.train", "train", 60), ("eng.testa", "dev", 20), ("eng.testb", "test", 20)):
        _head(shared_data / "conll2003" / name, root / f"{split}.conll", n)
    store, run = root / "store", root / "run"
    code, out, err = run_main(extract_main, "--kind", "token_classification", "--format", "conll", "--token-column",
                              "0", "--tag-column", "3", "--task", "conll2003", "--token-mode", "sequence",
                              *[a for s in ("train", "dev", "test") for a in ("--split", f"{s}={root / s}.conll")],
                              "--out", store, *SMALL)
    assert code == 0, err[-3000:]
    code, out, err = run_main(fit_main, "--store", store, "--adapter", "scalar_mix", "--out", run, "--epochs", "3",
                              "--batch-size", "8", "--lr", "1e-2", "--quiet", "--no-jit-compile")
    assert code == 0, err[-3000:]
    return store, run, root


def _conll_columns(path):
    gold, pred, sentence = [], [], ([], [])
    for line in path.read_text().splitlines():
        if not line:
            gold.append(sentence[0])
            pred.append(sentence[1])
            sentence = ([], [])
            continue
        _, g, p = line.split(" ")
        sentence[0].append(g)
        sentence[1].append(p)
    return gold, pred


def test_the_store_records_the_task_its_scheme_and_windows(ner):
    store, run, _ = ner
    manifest = json.loads((store / "manifest.json").read_text())
    assert manifest["task_kind"] == "token_classification"
    assert manifest["label_names"] == ["O", "B-LOC", "I-LOC", "B-MISC", "I-MISC", "B-ORG", "I-ORG", "B-PER", "I-PER"]
    options = manifest["task_spec"]["file_options"]
    assert (options["tag_scheme"], options["scheme"], options["format"]) == ("BIO", "BIO", "conll")
    # a 32-token window holds 30 sub-words: some CoNLL sentences need two or more
    assert manifest["splits"]["train"]["num_records"] > manifest["splits"]["train"]["num_examples"] == 60
    from bertvision.runs import RunFolder

    results = RunFolder(run).results()
    assert results.main_metric == "f1" and {"f1", "precision", "recall", "token_accuracy"} <= set(results.dev_metrics)
    assert len(results.layer_weights) == len(manifest["layers"])  # the scalar mix: which layers NER reads


def test_seqeval_on_the_written_conll_file_equals_the_printed_scores(ner):
    store, run, root = ner
    out_file = root / "store-test.conll"
    code, out, err = run_main(predict_main, "--run", run, "--split", "test", "--out", out_file)
    assert code == 0, err[-3000:]
    printed = json.loads(out.strip().splitlines()[-1])
    gold, pred = _conll_columns(out_file)
    assert len(gold) == 20 and sum(map(len, gold)) == sum(len(b.splitlines()) for b in
                                                             (root / "test.conll").read_text().split("\n\n"))
    assert printed["f1"] == round(f1_score(gold, pred), 4)
    assert printed["precision"] == round(precision_score(gold, pred), 4)
    assert printed["recall"] == round(recall_score(gold, pred), 4)
    assert printed["f1"] > 0.0  # three epochs learn something even from 60 sentences
    # the same file from the raw test file (the backbone runs here; every window as the store's)
    again = root / "input-test.conll"
    code, out, err = run_main(predict_main, "--run", run, "--input", root / "test.conll", "--out", again)
    assert code == 0, err[-3000:]
    assert again.read_text() == out_file.read_text()


def test_raw_text_gives_entities_with_character_offsets(ner):
    _, run, _ = ner
    text = "Germany 's representative to the European Union , Werner Zwingmann , said on Wednesday ."
    code, out, err = run_main(predict_main, "--run", run, "--text", text)
    assert code == 0, err[-3000:]
    (result,) = json.loads(out).values()
    assert result["words"][:2] == ["Germany", "'"] and len(result["tags"]) == len(result["words"])
    for entity in result["entities"]:
        assert text[entity["start"]:entity["end"]] == entity["text"] and 0 < entity["score"] <= 1
        assert entity["type"] in {"LOC", "MISC", "ORG", "PER"}


def test_finetune_on_the_store_and_predict_its_split(ner):
    """BERT fine-tuned on the store's kept sentences (a tag head over every
    token), then the store's dev split predicted through it: the CoNLL file
    written scores as the run's own dev evaluation."""
    store, _, root = ner
    run = root / "bert"
    code, out, err = run_main(finetune_main, "--store", store, "--out", run, "--epochs", "1", "--batch-size", "16",
                              "--lr", "1e-3", *SMALL)
    assert code == 0, err[-3000:]
    from bertvision.runs import RunFolder

    results = RunFolder(run).results()
    assert results.run_type == "finetune" and results.spec.kind == "token_classification"
    code, out, err = run_main(predict_main, "--run", run, "--split", "dev", "--out", root / "bert-dev.conll")
    assert code == 0, err[-3000:]
    printed = json.loads(out.strip().splitlines()[-1])
    gold, pred = _conll_columns(root / "bert-dev.conll")
    assert len(gold) == 20 and printed["f1"] == round(f1_score(gold, pred), 4)
    assert printed == {k: round(v, 4) for k, v in results.dev_metrics.items()}


def test_bad_files_are_refused_before_anything_is_written(tmp_path):
    bad = tmp_path / "train.conll"
    bad.write_text("EU NNP B-ORG\nrejects VBZ O\nGerman JJ I-MISC\n\n")
    store = tmp_path / "store"
    code, out, err = run_main(extract_main, "--kind", "token_classification", "--token-column", "0",
                              "--tag-column", "-1", "--tag-scheme", "BIO", "--split", f"train={bad}", "--out", store,
                              *SMALL)
    assert code == 2 and "train.conll:3: I-MISC after O" in err and len(err.strip().splitlines()) == 1
    assert not store.exists()
