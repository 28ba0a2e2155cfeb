"""bertvision.inference.serving: raw text in, the same outputs as predict-from-a-store
(cls, mean and sequence stores; SQuAD windows and decoding; a fine-tuning
run), one backbone forward pass for every adapter of a batch, and runs that
do not share a backbone refused."""

import dataclasses
import shutil

import numpy as np
import pytest

from bertvision.data.readers import Example, load_examples
from bertvision.errors import RunError, ServeError
from bertvision.inference.predict import predict_run
from bertvision.runs import RunFolder
from bertvision.inference.inputs import read_inputs
from bertvision.inference.serving import Predictor
from bertvision.store.format import open_store
from bertvision.data.tasks import get_task
from tests.serving_runs import mrpc_store, run_specs, served_runs, sst2_mean_store  # noqa: F401
from tests.stores import squad_store, sst2_cls_store, sst2_seq_store  # noqa: F401


@pytest.fixture(scope="module")
def predictor(served_runs):  # noqa: F811
    p = Predictor.from_runs(run_specs(served_runs))
    p.warmup()
    return p


def store_examples(store, split="dev"):
    """The examples of a store split, from its examples file (texts, labels)."""
    out = []
    for row in open_store(store).examples(split):
        texts = tuple(row["texts"]) if "texts" in row else (row["question"], row["context"])
        out.append(Example(row["uid"], texts, row.get("label")))
    return out


@pytest.mark.parametrize("name,store", [("cls", "sst2_cls_store"), ("mean", "sst2_mean_store"),
                                        ("seq", "sst2_seq_store"), ("mrpc", "mrpc_store")])
def test_classification_equals_predict_from_store(predictor, served_runs, name, store, request):  # noqa: F811
    store = request.getfixturevalue(store)
    from_store = predict_run(served_runs[name], store, "dev")
    served = predictor.predict_examples(name, store_examples(store), split="dev", batch_size=24)
    assert served.uids.tolist() == from_store.uids.tolist()
    np.testing.assert_array_equal(served.labels, from_store.labels)
    # float16 activations on both sides; the forward passes differ only in padding and XLA
    np.testing.assert_allclose(served.probabilities, from_store.probabilities, atol=2e-3)
    sure = np.abs(from_store.probabilities[:, 1] - 0.5) > 2e-3
    np.testing.assert_array_equal(served.point_predictions()[sure], from_store.point_predictions()[sure])
    # the HTTP result format for the same texts
    examples = store_examples(store)[:3]
    fields = predictor.model(name).fields
    results = predictor.predict({name: [dict(zip(fields, e.texts)) for e in examples]})[name]
    names = get_task(from_store.task).label_names
    for r, p in zip(results, from_store.probabilities[:3]):
        assert r["probabilities"] == pytest.approx(dict(zip(names, p.tolist())), abs=2e-3)
        assert r["label"] in names


def test_squad_equals_predict_from_store(predictor, served_runs, squad_store):  # noqa: F811
    from_store = predict_run(served_runs["squad_v2"], squad_store, "dev")
    examples = store_examples(squad_store)
    served = predictor.predict_examples("squad_v2", examples, split="dev", batch_size=5)
    assert len(from_store.window_uids) > len(from_store.uids)  # several windows per question
    assert served.window_uids.tolist() == from_store.window_uids.tolist()
    np.testing.assert_array_equal(served.window_index, from_store.window_index)
    width = min(served.start_logits.shape[1], from_store.start_logits.shape[1])
    np.testing.assert_array_equal(served.offsets[:, :width], from_store.offsets[:, :width])
    real = from_store.offsets[:, :width, 0] >= 0
    np.testing.assert_allclose(served.start_logits[:, :width][real], from_store.start_logits[:, :width][real],
                               atol=2e-3)
    threshold = predictor.model("squad_v2").threshold
    for t in (0.0, threshold, np.inf):
        a, b = from_store.decode(threshold=t), served.decode(threshold=t)
        assert a.predictions == b.predictions and a.best_text == b.best_text
        assert b.na_probs == pytest.approx(a.na_probs, abs=1e-3)
    # the HTTP result format: answer text, its character offsets, the no-answer probability
    decoded = from_store.decode(threshold=threshold)
    results = predictor.predict({"squad_v2": [{"question": e.texts[0], "context": e.texts[1], "id": e.uid}
                                              for e in examples[:6]]})["squad_v2"]
    for r, e in zip(results, examples[:6]):
        assert r["id"] == e.uid
        assert r["answer"] == decoded.predictions[e.uid]
        assert r["no_answer_probability"] == pytest.approx(decoded.na_probs[e.uid], abs=1e-3)
        span = r["best_span"]
        assert span["text"] == decoded.best_text[e.uid] == e.texts[1][span["start"]:span["end"]]
        if r["answer"]:
            assert (r["start"], r["end"]) == (span["start"], span["end"])
        else:
            assert r["start"] is None and r["end"] is None


def test_finetuning_run_served_as_it_predicted(predictor, served_runs, shared_data):  # noqa: F811
    saved = RunFolder(served_runs["ft"]).load_predictions("dev")
    dev = load_examples("sst2", "dev", shared_data / "glue" / "SST-2", limit=16).examples
    served = predictor.predict_examples("ft", dev, split="dev")
    assert served.uids.tolist() == saved.uids.tolist()
    np.testing.assert_allclose(served.probabilities, saved.probabilities, atol=1e-4)
    assert served.evaluate() == saved.evaluate()
    info = {t["name"]: t for t in predictor.info()["tasks"]}
    assert info["ft"]["run_type"] == "finetune" and info["ft"]["backbone"] != info["cls"]["backbone"]


def test_one_backbone_pass_feeds_every_adapter(predictor):
    shared = predictor.model("cls").group
    assert {predictor.model(n).group for n in ("cls", "mean", "seq", "mrpc", "squad_v2")} == {shared}
    (backbone,) = [b for b in predictor.info()["backbones"] if b["name"] == shared]
    assert backbone["layers"] == list(range(7))  # the union: all layers (cls/mean/seq) and the last 4 (mrpc)
    before = predictor.stats()
    text = "a gorgeous, witty, seductive movie"
    context = "The Rhine flows from the Swiss Alps to the North Sea. " * 15
    out = predictor.predict({"cls": [text], "mean": [text], "seq": [{"text": text}],
                             "mrpc": [{"text": text, "text_pair": "a witty film"}],
                             "squad_v2": [{"question": "Where does the Rhine flow?", "context": context}],
                             "ft": [text]})
    after = predictor.stats()
    passes = {g: after["forward_passes"][g] - before["forward_passes"][g] for g in after["forward_passes"]}
    assert passes[shared] == 1 and sum(passes.values()) == 2  # the shared backbone once, the fine-tuned BERT once
    question = {"question": "Where does the Rhine flow?", "context": context}
    windows = len(predictor.encode("squad_v2", predictor.examples("squad_v2", [question])).features)
    assert windows > 1
    # the same text for cls, mean and seq is one row; mrpc's pair another; the SQuAD windows
    assert after["rows_forwarded"][shared] - before["rows_forwarded"][shared] == 1 + 1 + windows
    for name in ("cls", "mean", "seq", "mrpc", "squad_v2", "ft"):
        assert after["model_calls"][name] == before["model_calls"][name] + 1
    assert out["cls"][0]["label"] in ("negative", "positive") and "answer" in out["squad_v2"][0]
    # tokenized once per distinct featurizer: cls and mean (64 tokens) share; seq (32 tokens) has its own
    jobs = predictor.encode_all([(n, predictor.examples(n, [text])) for n in ("cls", "mean", "seq")])
    assert jobs[0].features is jobs[1].features and jobs[2].features is not jobs[0].features


def test_adapter_on_an_int8_store_served_as_predicted_from_it(served_runs, tmp_path_factory, shared_data):  # noqa: F811
    """An adapter trained on an int8 store gets the same int8 round trip when
    served: its outputs equal predict-from-store, beside a float16 adapter on
    the same layers (which must not share its input)."""
    from bertvision.training.fit import FitConfig, fit
    from tests.stores import build_store

    root = tmp_path_factory.mktemp("int8")
    store = build_store(root, "sst2_seq_int8", "sst2", shared_data / "glue" / "SST-2", ["train", "dev"], limit=48,
                        token_mode="sequence", max_seq_len=32, dtype="int8", jit_compile=False)
    run = root / "run"
    fit(FitConfig(store=store, out=str(run), adapter={"kind": "adapter_pooler"}, epochs=1, batch_size=16, lr=3e-3,
                  verbose=0, jit_compile=False))
    predictor = Predictor.from_runs([f"i8={run}", f"seq={served_runs['seq']}"])
    assert predictor.model("i8").quantized and not predictor.model("seq").quantized
    info = {t["name"]: t for t in predictor.info()["tasks"]}
    assert (info["i8"]["dtype"], info["i8"]["store_dtype"]) == ("float16", "int8")
    from_store = predict_run(run, store, "dev")
    served = predictor.predict_examples("i8", store_examples(store), split="dev", batch_size=24)
    np.testing.assert_allclose(served.probabilities, from_store.probabilities, atol=2e-3)
    both = predictor.predict({"i8": ["a gorgeous, witty, seductive movie"], "seq": ["a gorgeous, witty movie"]})
    assert set(both) == {"i8", "seq"}


def test_runs_on_another_backbone_are_refused(served_runs, tmp_path):  # noqa: F811
    def tampered(name, **changes):
        folder = tmp_path / name
        shutil.copytree(served_runs["cls"], folder)
        run = RunFolder(folder)
        run.write_results(dataclasses.replace(run.results(), **changes))
        return str(folder)

    results = RunFolder(served_runs["cls"]).results()
    other = {**results.backbone, "weights_sha256": "0" * 64}
    with pytest.raises(ServeError, match="weights_sha256 .* but the run was trained on activations of 000000"):
        Predictor.from_runs([tampered("other_weights", backbone=other)])
    sig = {**results.store_signature, "backbone": {**results.store_signature["backbone"], "weights_sha256": "1" * 64}}
    with pytest.raises(ServeError, match="the store .*sst2_cls no longer holds what the run was trained on"):
        Predictor.from_runs([tampered("other_signature", store_signature=sig)])
    with pytest.raises(ServeError, match="disagree on weights_sha256"):
        Predictor.from_runs([tampered("no_store", store_signature=sig, store=str(tmp_path / "gone"))])
    with pytest.raises(ServeError, match="name them"):
        Predictor.from_runs([str(served_runs["cls"]), str(served_runs["cls"])])
    with pytest.raises(RunError, match="does not exist"):
        Predictor.from_runs([str(tmp_path / "missing")])


def test_store_gone_tokenizes_with_extraction_defaults(served_runs, sst2_seq_store, tmp_path, capsys):  # noqa: F811
    folder = tmp_path / "moved"
    shutil.copytree(served_runs["seq"], folder)
    run = RunFolder(folder)
    run.write_results(dataclasses.replace(run.results(), store=str(tmp_path / "no-store")))
    p = Predictor.from_runs([str(folder)])
    assert "not readable" in capsys.readouterr().err
    (info,) = p.info()["tasks"]
    assert info["name"] == "sst2" and info["featurizer"]["source"] == "defaults"
    assert info["featurizer"]["max_seq_len"] == 32
    served = p.predict_examples("sst2", store_examples(sst2_seq_store), split="dev")
    np.testing.assert_allclose(served.probabilities, predict_run(served_runs["seq"], sst2_seq_store,
                                                                 "dev").probabilities, atol=2e-3)


def test_bad_inputs_are_named(predictor, tmp_path):
    cases = [("mrpc", ["just one text"], "needs text and text_pair; missing text_pair"),
             ("cls", [{"text": "  "}], r"inputs\[0\].text: is empty"),
             ("cls", [{"text": 5}], "must be a string, got int"),
             ("cls", [{"text": "x", "question": "y"}], "unexpected question"),
             ("squad_v2", [{"question": "Where?"}], "missing context"),
             ("cls", [7], "expected a string or an object"),
             ("nope", ["x"], "unknown task 'nope'")]
    for name, items, message in cases:
        with pytest.raises(ServeError, match=message):
            predictor.examples(name, items)
    with pytest.raises(ServeError, match="more than the limit of 10"):
        predictor.examples("cls", ["x" * 11], max_chars=10)
    with pytest.raises(ServeError, match="duplicate input ids"):
        predictor.encode("cls", predictor.examples("cls", [{"text": "a", "id": "1"}, {"text": "b", "id": "1"}]))
    # input files: one per line (pairs tab-separated), .jsonl
    lines = tmp_path / "pairs.txt"
    lines.write_text("He left.\tHe went away.\nA cat.\tA dog.\n")
    items, split = read_inputs(lines, get_task("mrpc"))
    assert split == "pairs" and [i["text_pair"] for i in items] == ["He went away.", "A dog."]
    lines.write_text("only one field\n")
    with pytest.raises(ServeError, match="pairs.txt:1: 1 tab-separated field"):
        read_inputs(lines, get_task("mrpc"))
    jsonl = tmp_path / "x.jsonl"
    jsonl.write_text('"a fine film"\n{"text": "dull", "id": "r2"}\n{oops\n')
    with pytest.raises(ServeError, match="x.jsonl:3: not valid JSON"):
        read_inputs(jsonl, get_task("sst2"))
