"""ONNX export (issue 30 item 4): ``pipelines.export --format onnx`` writes
SST-2's, MRPC's and a Banking77 run's (your own CSV, 77 intents) as one ONNX
model (the backbone once, three heads); onnxruntime gives the probabilities
``pipelines.predict`` prints for the same real inputs (max |difference|
small, the same labels), and
``--quantize int8`` adds a dynamically quantized model that still runs."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.stores import run_main, run_pipeline

ROOT = Path(__file__).resolve().parents[1]
TASKS = {"sst2": "glue/SST-2", "mrpc": "glue/MRPC"}
OWN = "banking77"  # your own data: ../shared/data/banking77/{train,test}.csv, columns text,category
N = 24  # real dev (Banking77: test) inputs compared per task


def _run(*args: str) -> str:
    proc = subprocess.run([sys.executable, "-m", *args], cwd=ROOT, capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


@pytest.fixture(scope="module")
def exported(tmp_path_factory, shared_data):
    """Three adapter runs (SST-2, MRPC: 32 train examples; Banking77: a seeded
    sample of 48 a split, every one of its 77 labels kept; 1 epoch) made by
    the real commands, exported to ONNX with int8. The extractions and fits
    run in this process (their main(argv); no XLA compilation: a few dozen
    examples); the export, whose conversion holds several GB, in its own."""
    root = tmp_path_factory.mktemp("onnx")
    runs = {}
    for task, folder in TASKS.items():
        store, run = root / f"store-{task}", root / f"run-{task}"
        run_pipeline("pipelines.extract", "--task", task, "--data-dir", shared_data / folder, "--split", "train",
                     "--split", "dev", "--limit", "32", "--token-mode", "cls", "--out", store, "--no-progress",
                     "--no-jit")
        run_pipeline("pipelines.fit", "--store", store, "--adapter", "adapter_pooler", "--out", run,
                     "--epochs", "1", "--quiet", "--no-jit-compile")
        runs[task] = run
    store, runs[OWN] = root / f"store-{OWN}", root / f"run-{OWN}"
    run_pipeline("pipelines.extract", "--data-dir", shared_data / OWN, "--split", "train=train.csv", "--split",
                 "test=test.csv", "--dev-fraction", "0.1", "--seed", "0", "--text-column", "text", "--label-column",
                 "category", "--sample", "48", "--token-mode", "cls", "--out", store, "--no-progress", "--no-jit")
    run_pipeline("pipelines.fit", "--store", store, "--adapter", "adapter_pooler", "--out", runs[OWN],
                 "--epochs", "1", "--quiet", "--no-jit-compile")
    out = root / "onnx"
    printed = _run("pipelines.export", *(a for name, run in runs.items() for a in ("--run", f"{name}={run}")),
                   "--out", str(out), "--format", "onnx", "--quantize", "int8")
    assert "sst2_probabilities" in printed and "model.int8.onnx" in printed
    return root, runs, out


def _inputs(shared_data, task):
    """The first N examples of the task's dev split (Banking77: of test.csv,
    read as a user's file), and those inputs as ``pipelines.predict`` reads them."""
    import pandas as pd

    from bertvision.data.readers import Example, load_examples
    from bertvision.data.tasks import get_task

    if task == OWN:
        texts = pd.read_csv(shared_data / OWN / "test.csv")["text"][:N]
        examples = [Example(uid=str(i), texts=(text,)) for i, text in enumerate(texts)]
    else:
        examples = load_examples(get_task(task), "dev", shared_data / TASKS[task], limit=N).examples
    return examples, [dict(zip(("text", "text_pair"), e.texts)) for e in examples]


@pytest.mark.parametrize("task", [*TASKS, OWN])
def test_onnx_matches_pipelines_predict_on_real_inputs(exported, shared_data, task):
    import onnxruntime as ort
    from transformers import AutoTokenizer

    from bertvision.data.features import Featurizer
    from bertvision.models.backbone import embedded_model_path
    from bertvision.store.format import open_store

    root, runs, out = exported
    info = json.loads((out / "bertvision_export.json").read_text())
    assert info["inputs"] == ["token_ids", "segment_ids", "padding_mask"]
    assert info["outputs"] == ["sst2_probabilities", "mrpc_probabilities", f"{OWN}_probabilities"]  # one graph
    assert info["tasks"][OWN]["kind"] == "classification" and len(info["tasks"][OWN]["labels"]) == 77
    examples, items = _inputs(shared_data, task)
    path = root / f"{task}-inputs.jsonl"
    path.write_text("".join(json.dumps(i) + "\n" for i in items))
    run_pipeline("pipelines.predict", "--run", runs[task], "--input", path, "--out", root / f"{task}.jsonl")
    predicted = [json.loads(line) for line in (root / f"{task}.jsonl").read_text().splitlines()]
    labels = info["tasks"][task]["labels"]
    want = np.array([[p["probabilities"][label] for label in labels] for p in predicted])

    featurizer = Featurizer.from_config(AutoTokenizer.from_pretrained(embedded_model_path()),
                                        info["tasks"][task]["featurizer"])
    spec = open_store(root / f"store-{task}").task_spec  # the benchmark's, or the one your files made
    feeds = {k: v.astype(np.int32) for k, v in featurizer.encode(spec, examples).inputs().items()}
    session = ort.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    got = session.run([f"{task}_probabilities"], feeds)[0]
    assert got.shape == want.shape == (N, len(labels))
    assert np.abs(got - want).max() < 1e-4, np.abs(got - want).max()
    assert (got.argmax(-1) == want.argmax(-1)).all()
    assert [labels[i] for i in got.argmax(-1)] == [p["label"] for p in predicted]

    quantized = ort.InferenceSession(str(out / "model.int8.onnx"), providers=["CPUExecutionProvider"])
    q = quantized.run([f"{task}_probabilities"], feeds)[0]
    assert q.shape == got.shape and np.allclose(q.sum(-1), 1, atol=1e-4)
    assert (out / "model.int8.onnx").stat().st_size < 0.6 * (out / "model.onnx").stat().st_size


def test_quantize_needs_onnx_format(tmp_path):
    from pipelines.export import main as export_main

    code, _, err = run_main(export_main, "--run", "r", "--out", tmp_path / "o", "--quantize", "int8")
    assert code == 2 and "--quantize applies to --format onnx" in err
