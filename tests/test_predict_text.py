"""python -m pipelines.predict on raw text (no store): --text for one input
and several runs, --input files (a GLUE TSV, a SQuAD JSON, .jsonl, one input
per line) giving what predict-from-a-store gives on the same examples."""

import json

import numpy as np

from bertvision.inference.predict import predict_run
from bertvision.store.format import open_store
from pipelines.predict import main as predict_main
from tests.serving_runs import mrpc_store, served_runs, sst2_mean_store  # noqa: F401
from tests.stores import run_main, squad_store, sst2_cls_store, sst2_seq_store  # noqa: F401


def test_text_flags(served_runs):  # noqa: F811
    code, out, err = run_main(predict_main, "--run", f"mrpc={served_runs['mrpc']}", "--run", f"ft={served_runs['ft']}",
                              "--text", "He left the firm in May.")
    assert code == 2 and "task mrpc needs text and text_pair; missing text_pair" in err
    code, out, err = run_main(predict_main, "--run", served_runs["mrpc"], "--text", "He left the firm in May.",
                              "--text-pair", "In May he left the company.")
    assert code == 0, err[-3000:]
    result = json.loads(out)["mrpc"]
    assert result["label"] in ("not_equivalent", "equivalent") and sum(result["probabilities"].values()) > 0.999
    code, out, err = run_main(predict_main, "--run", served_runs["squad_v2"], "--question", "Where does it end?",
                              "--context", "The Rhine ends in the North Sea.")
    assert code == 0, err[-3000:]
    answer = json.loads(out)["squad_v2"]
    assert 0 <= answer["no_answer_probability"] <= 1 and "best_span" in answer
    code, out, err = run_main(predict_main, "--run", served_runs["cls"], "--text", "x", "--store", "s", "--split", "d")
    assert code == 2 and "not both" in err


def test_glue_file_equals_predict_from_store(served_runs, mrpc_store, shared_data, tmp_path):  # noqa: F811
    out_file = tmp_path / "MRPC.tsv"
    code, out, err = run_main(predict_main, "--run", served_runs["mrpc"], "--input",
                              shared_data / "glue" / "MRPC" / "dev.tsv", "--out", out_file, "--batch-size", "128")
    assert code == 0, err[-3000:]
    assert out.startswith("408 predictions ->") and "f1" in json.loads(out.strip().splitlines()[-1])
    lines = out_file.read_text().splitlines()
    assert lines[0] == "index\tprediction" and len(lines) == 409
    raw = np.load(tmp_path / "MRPC.npz")
    from_store = predict_run(served_runs["mrpc"], mrpc_store, "dev")  # the first 32 dev pairs
    n = len(from_store.uids)
    assert raw["uids"][:n].tolist() == from_store.uids.tolist()
    np.testing.assert_allclose(raw["probabilities"][:n], from_store.probabilities, atol=2e-3)


def test_squad_file_equals_predict_from_store(served_runs, squad_store, shared_data, tmp_path):  # noqa: F811
    qas = {r["uid"] for r in open_store(squad_store).examples("dev")[:6]}
    source = json.loads((shared_data / "squad2" / "dev-v2.0.Rhine.json").read_text())  # the store's dev split
    for article in source["data"]:
        for paragraph in article["paragraphs"]:
            paragraph["qas"] = [q for q in paragraph["qas"] if q["id"] in qas]
    (tmp_path / "six.json").write_text(json.dumps(source))
    code, out, err = run_main(predict_main, "--run", served_runs["squad_v2"], "--input", tmp_path / "six.json",
                              "--out", tmp_path / "preds.json", "--threshold", "inf")
    assert code == 0, err[-3000:]
    assert out.startswith("6 questions ->")
    predictions = json.loads((tmp_path / "preds.json").read_text())
    expected = predict_run(served_runs["squad_v2"], squad_store, "dev").decode(threshold=np.inf).predictions
    assert predictions == {q: expected[q] for q in predictions} and set(predictions) == qas


def test_jsonl_and_line_files(served_runs, tmp_path):  # noqa: F811
    (tmp_path / "in.jsonl").write_text('"a gorgeous film"\n{"text": "dull and lifeless", "id": "r2"}\n')
    (tmp_path / "in.txt").write_text("a gorgeous film\ndull and lifeless\n")
    outs = {}
    for name in ("in.jsonl", "in.txt"):
        code, out, err = run_main(predict_main, "--run", served_runs["seq"], "--input", tmp_path / name,
                                  "--out", tmp_path / f"{name}.out.jsonl")
        assert code == 0 and out.startswith("2 predictions"), err[-3000:]
        outs[name] = [json.loads(line) for line in (tmp_path / f"{name}.out.jsonl").read_text().splitlines()]
    assert [r["id"] for r in outs["in.jsonl"]] == ["1", "r2"] and [r["id"] for r in outs["in.txt"]] == ["1", "2"]
    for a, b in zip(outs["in.jsonl"], outs["in.txt"]):
        assert a["probabilities"] == b["probabilities"] and a["label"] in ("negative", "positive")
    code, out, err = run_main(predict_main, "--run", served_runs["seq"], "--input", tmp_path / "in.txt")
    assert code == 2 and "--input needs --out" in err


def test_unreadable_records_of_an_input_file_are_reported_and_capped(served_runs, tmp_path):  # noqa: F811
    """A GLUE file with a row it cannot read: not a silently short submission."""
    folder = tmp_path / "SST-2"
    folder.mkdir()
    rows = ["index\tsentence", "0\ta gorgeous film", "1\t ", "2\tdull and lifeless", "3\ta witty film",
            "4\tflat"]
    (folder / "test.tsv").write_text("\n".join(rows) + "\n")
    out_file = tmp_path / "SST-2.tsv"
    code, out, err = run_main(predict_main, "--run", served_runs["seq"], "--input", folder / "test.tsv",
                              "--out", out_file)
    assert code == 2 and not out_file.exists()
    last = err.strip().splitlines()[-1]
    assert last.startswith("error: sst2/test: 1 of 5 records skipped") and "--max-skipped" in last, err[-2000:]
    code, out, err = run_main(predict_main, "--run", served_runs["seq"], "--input", folder / "test.tsv",
                              "--out", out_file, "--max-skipped", "0.25")
    assert code == 0, err[-2000:]
    assert "skipped 1 of 5 records" in err and f"{folder / 'test.tsv'}:3: empty text" in err
    lines = out_file.read_text().splitlines()
    assert lines[0] == "index\tprediction" and [line.split("\t")[0] for line in lines[1:]] == ["0", "2", "3", "4"]
