"""python -m pipelines.export: the SavedModel loaded with tf.saved_model.load
gives the predictor's outputs through every signature, and the in-graph
tokenizer gives the featurizer's (Hugging Face fast tokenizer's) tokens on
real SST-2, MRPC and SQuAD text."""

import json

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_text  # noqa: F401  (registers the text signatures' ops)

from bertvision.models.backbone import load_tokenizer, resolve_backbone
from bertvision.data.readers import Example, load_examples
from bertvision.inference.export import EXPORT_INFO, TEXT_DIR, GraphTokenizer
from bertvision.data.features import Featurizer
from bertvision.inference.serving import Predictor
from pipelines.export import main as export_main
from tests.serving_runs import mrpc_store, run_specs, served_runs, sst2_mean_store  # noqa: F401
from tests.stores import cli_env, run_main, squad_store, sst2_cls_store, sst2_seq_store  # noqa: F401

EDGE = ["İstanbul ĞÜŞ straße ﬁne", "emoji 😀👍🏽 ok", "tab\tnew\nline\r\x0bvt\x1f\u200bzw\u00a0nbsp\u2028ls",
        "한국어 텍스트", "中文字符和日本語のテキスト", "x" * 150, "é" * 60, "Ａｂｃ full width １２３", "µ ½ ² ´ ﬀ ℃ ™",
        "\ufffd\x00nul", "ÀÉÎÕÜ ǅ ǈ", "ΣΑΣ Ωmega ΟΔΟΣ", "a\u0301b\u0308", "I´m Treasury\x12s 8½ km² m²"]


def _texts(shared_data):
    sst2 = [e.texts for e in load_examples("sst2", "dev", shared_data / "glue" / "SST-2").examples]
    mrpc = [e.texts for e in load_examples("mrpc", "dev", shared_data / "glue" / "MRPC").examples]
    mrpc += [e.texts for e in load_examples("mrpc", "train", shared_data / "glue" / "MRPC", limit=600).examples]
    squad = []
    for name in ("dev-v2.0.Rhine", "dev-v2.0.Normans_CCT"):
        for e in load_examples("squad_v2", name, shared_data / "squad2").examples:
            squad += [(e.texts[0],), (e.texts[1],)]
    return sst2 + [(t,) for t in EDGE] + list(dict.fromkeys(squad)), mrpc + [(a, b) for a, b in zip(EDGE, EDGE[1:])]


def test_graph_tokenizer_gives_the_featurizers_tokens(shared_data):
    hf = load_tokenizer(resolve_backbone(None))
    assert GraphTokenizer.supports(hf)
    graph = GraphTokenizer(hf)
    singles, pairs = _texts(shared_data)
    for texts, task in ((singles, "sst2"), (pairs, "mrpc")):
        for length in (128, 24):  # 24: most pairs are cut, longest first
            want = Featurizer(hf, max_seq_len=length).encode(task, [Example(str(i), t) for i, t in enumerate(texts)])
            columns = [tf.constant([t[k] for t in texts]) for k in range(len(texts[0]))]
            got = (tf.function(lambda a: graph.pack([a], length)) if len(columns) == 1
                   else tf.function(lambda a, b: graph.pack([a, b], length)))(*columns)
            for key in ("token_ids", "segment_ids", "padding_mask"):
                bad = np.flatnonzero((got[key].numpy() != getattr(want, key)).any(axis=1))
                assert bad.size == 0, (task, length, key, [texts[i] for i in bad[:3]])


@pytest.fixture(scope="module")
def exported(served_runs, module_tmp):  # noqa: F811
    out = module_tmp("export") / "saved"
    args = [a for spec in run_specs(served_runs, ("cls", "seq", "mrpc", "squad_v2", "ft")) for a in ("--run", spec)]
    code, stdout, stderr = run_main(export_main, *args, "--out", out)
    assert code == 0, stderr[-3000:]
    assert "serve_text(text) -> cls_probabilities, seq_probabilities, ft_probabilities [in " in stdout
    return out


@pytest.fixture(scope="module")
def predictor(served_runs):  # noqa: F811
    return Predictor.from_runs(run_specs(served_runs, ("cls", "seq", "mrpc", "squad_v2", "ft")))


def _probabilities(results):
    return np.array([list(r["probabilities"].values()) for r in results])


def test_saved_model_gives_the_predictors_outputs(exported, predictor, served_runs):  # noqa: F811
    info = json.loads((exported / EXPORT_INFO).read_text())
    assert set(info["signatures"]) == {"serve", "serve_text", "serve_text_pair"} and not info["needs_tensorflow_text"]
    assert info["signatures"]["serve_text_pair"]["tasks"] == ["mrpc"]
    assert info["text_saved_model"] == TEXT_DIR and info["signatures"]["serve"]["saved_model"] == "."
    assert {"serving_default", "serve"} == set(tf.saved_model.load(str(exported)).signatures)
    loaded = tf.saved_model.load(str(exported / TEXT_DIR))
    assert {"serving_default", "serve", "serve_text", "serve_text_pair"} <= set(loaded.signatures)
    texts = ["a gorgeous, witty, seductive movie", "dull , lifeless and " + "very " * 40 + "long"]
    pairs = [("He left the company in May.", "In May he left the firm."),
             ("The dollar was flat against the yen " * 6, "The dollar was flat.")]
    served = predictor.predict({"cls": texts, "seq": texts, "ft": texts,
                                "mrpc": [{"text": a, "text_pair": b} for a, b in pairs]})
    out = loaded.signatures["serve_text"](text=tf.constant(texts))
    for name in ("cls", "seq", "ft"):
        np.testing.assert_allclose(out[f"{name}_probabilities"].numpy(), _probabilities(served[name]), atol=1e-5)
    out = loaded.signatures["serve_text_pair"](text=tf.constant([a for a, _ in pairs]),
                                               text_pair=tf.constant([b for _, b in pairs]))
    np.testing.assert_allclose(out["mrpc_probabilities"].numpy(), _probabilities(served["mrpc"]), atol=1e-5)
    # token ids in (serving_default): every task's outputs on the same rows
    job = predictor.encode("cls", predictor.examples("cls", texts))
    f = job.features
    out = loaded.signatures["serving_default"](token_ids=tf.constant(f.token_ids),
                                               segment_ids=tf.constant(f.segment_ids),
                                               padding_mask=tf.constant(f.padding_mask))
    assert sorted(out) == ["cls_probabilities", "ft_probabilities", "mrpc_probabilities", "seq_probabilities",
                           "squad_v2_end_logits", "squad_v2_start_logits"]
    np.testing.assert_allclose(out["cls_probabilities"].numpy(), _probabilities(served["cls"]), atol=1e-5)
    # SQuAD windows: the span logits at every real token
    question = {"question": "Where does the Rhine flow?",
                "context": "The Rhine flows from the Swiss Alps to the North Sea. " * 15}
    job = predictor.encode("squad_v2", predictor.examples("squad_v2", [question]))
    f = job.features
    assert len(f) > 1
    (raw,) = predictor.forward([job])
    out = loaded.signatures["serving_default"](token_ids=tf.constant(f.token_ids),
                                               segment_ids=tf.constant(f.segment_ids),
                                               padding_mask=tf.constant(f.padding_mask))
    width = raw["start_logits"].shape[1]
    real = f.padding_mask[:, :width].astype(bool)
    for key in ("start_logits", "end_logits"):
        np.testing.assert_allclose(out[f"squad_v2_{key}"].numpy()[:, :width][real], raw[key][real], atol=1e-3)


# saved_model_cli as TensorFlow installs it, in a process where tensorflow_text cannot be imported
_STOCK_CLI = ("import sys; sys.modules['tensorflow_text'] = None; "
              "from tensorflow.python.tools.saved_model_cli import main; sys.argv[0] = 'saved_model_cli'; "
              "sys.exit(main())")


def test_stock_tensorflow_runs_the_default_signature(exported):
    """Issue 32 item 4: `saved_model_cli run --signature_def serving_default` failed with
    "Op type not registered 'NormalizeUTF8'": the text signatures' TF Text ops were in the same graph."""
    import subprocess
    import sys

    exprs = "token_ids=[[101, 1037, 2204, 2143, 102]];segment_ids=[[0, 0, 0, 0, 0]];padding_mask=[[1, 1, 1, 1, 1]]"
    env = cli_env()
    proc = subprocess.run([sys.executable, "-c", _STOCK_CLI, "run", "--dir", str(exported), "--tag_set", "serve",
                           "--signature_def", "serving_default", "--input_exprs", exprs], env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Result for output key cls_probabilities" in proc.stdout and "NormalizeUTF8" not in proc.stderr
    # the text SavedModel does need TensorFlow Text: the same process refuses it (so the check above can fail)
    proc = subprocess.run([sys.executable, "-c", _STOCK_CLI, "run", "--dir", str(exported / TEXT_DIR), "--tag_set",
                           "serve", "--signature_def", "serving_default", "--input_exprs", exprs], env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode != 0 and "NormalizeUTF8" in proc.stderr


def test_export_refuses_a_used_folder(served_runs, tmp_path):  # noqa: F811
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "x").write_text("x")
    code, _, err = run_main(export_main, "--run", served_runs["cls"], "--out", tmp_path / "taken")
    assert code == 2 and "exists and is not an empty folder" in err
