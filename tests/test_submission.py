"""GLUE submission files in GLUE's own format, and `python -m pipelines.submit`."""

import numpy as np
import pytest

from bertvision.inference.predict import glue_submission_files, write_glue_submission
from bertvision.runs import Predictions
from pipelines.submit import main as submit_main
from tests.stores import build_store, run_main


def test_every_glue_file_in_its_official_form(tmp_path):
    assert glue_submission_files() == sorted(["AX.tsv", "CoLA.tsv", "MNLI-m.tsv", "MNLI-mm.tsv", "MRPC.tsv",
                                              "QNLI.tsv", "QQP.tsv", "RTE.tsv", "SST-2.tsv", "STS-B.tsv", "WNLI.tsv"])
    probs = np.array([[0.9, 0.1], [0.2, 0.8]])
    expected = {"cola": "0\n1", "sst2": "0\n1", "mrpc": "0\n1", "qqp": "0\n1", "wnli": "0\n1",
                "qnli": "entailment\nnot_entailment", "rte": "entailment\nnot_entailment"}
    for task, want in expected.items():
        path = tmp_path / f"{task}.tsv"
        assert write_glue_submission(Predictions(task, "test", np.array(["7", "8"]), probabilities=probs), path) == 2
        lines = path.read_text().splitlines()
        assert lines[0] == "index\tprediction" and [x.split("\t")[0] for x in lines[1:]] == ["7", "8"]
        assert "\n".join(x.split("\t")[1] for x in lines[1:]) == want, task
    mnli = Predictions("mnli", "ax", np.array(["0", "1", "2"]), probabilities=np.eye(3)[[2, 0, 1]])
    write_glue_submission(mnli, tmp_path / "AX.tsv")
    assert (tmp_path / "AX.tsv").read_text().splitlines()[1:] == ["0\tcontradiction", "1\tentailment", "2\tneutral"]
    stsb = Predictions("stsb", "test", np.array(["0"]), scores=np.array([3.14159]))
    write_glue_submission(stsb, tmp_path / "STS-B.tsv")
    assert (tmp_path / "STS-B.tsv").read_text().splitlines()[1] == "0\t3.142"


@pytest.fixture(scope="module")
def sst2_run_with_test(shared_data, tmp_path_factory):
    from bertvision.training.fit import FitConfig, fit

    root = tmp_path_factory.mktemp("submit")
    store = build_store(root, "sst2_with_test", "sst2", shared_data / "glue" / "SST-2", ["train", "dev", "test"],
                        limit=24, token_mode="cls", max_seq_len=32)
    run = root / "run"
    fit(FitConfig(store=store, out=str(run), adapter={"kind": "linear_probe"}, epochs=1, batch_size=8, verbose=0,
                  jit_compile=False))
    return run


def test_submit_writes_official_files_and_refuses_an_incomplete_set(sst2_run_with_test, tmp_path):
    out = tmp_path / "submission"
    code, _, err = run_main(submit_main, "--run", sst2_run_with_test, "--out", out)
    assert code == 2 and "an incomplete GLUE submission: nothing gives AX.tsv, CoLA.tsv" in err
    assert not out.exists()
    code, stdout, err = run_main(submit_main, "--run", sst2_run_with_test, "--out", out, "--partial")
    assert code == 0, err[-2000:]
    assert sorted(p.name for p in out.iterdir()) == ["SST-2.tsv"] and "SST-2.tsv: 24 predictions" in stdout
    lines = (out / "SST-2.tsv").read_text().splitlines()
    assert lines[0] == "index\tprediction" and [x.split("\t")[0] for x in lines[1:]] == [str(i) for i in range(24)]
    assert {x.split("\t")[1] for x in lines[1:]} <= {"0", "1"}
    code, _, err = run_main(submit_main, "--run", sst2_run_with_test, "--out", out, "--partial")
    assert code == 2 and "exists; give a new folder" in err
