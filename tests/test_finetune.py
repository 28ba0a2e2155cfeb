"""BERT fine-tuning on the real shared data: checkpoints, results, resume,
checkpoints as backbones for extraction."""


import keras
import numpy as np
import pytest

from bertvision.store import format as st
from bertvision.errors import FinetuneError
from bertvision.data.features import bucket_length, length_grouped_batches
from bertvision.models.backbone import load_backbone, resolve_backbone
from bertvision.models.bert_task import BertTask
from bertvision.runs import latest_checkpoint
from bertvision.training.finetune import FinetuneConfig, Finetuner
from bertvision.runs import Predictions, RunFolder
from bertvision.training.trainer import Schedule
from pipelines import extract as extract_cli
from pipelines import finetune as finetune_cli
from tests.stores import SST2_FINETUNE as SST2_ARGS
from tests.stores import kill_when_saved, run_main, sst2_finetune_run  # noqa: F401  (a fixture)


@pytest.fixture
def sst2_run(sst2_finetune_run):  # noqa: F811
    """`pipelines.finetune SST2_ARGS` (tests.stores.sst2_finetune_run, shared with the ensemble and report tests)."""
    return sst2_finetune_run


def checkpoint_schedule(steps_per_epoch, epochs, every, at=None):
    return list(Schedule.checkpoints(steps_per_epoch, epochs, every, at).marks)


def test_checkpoint_schedule():
    assert checkpoint_schedule(10, 1.0, 0.5) == [(5, 0.5), (10, 1.0)]
    assert checkpoint_schedule(3, 1.0, 0.5) == [(2, 0.5), (3, 1.0)]
    assert [s for s, _ in checkpoint_schedule(250, 1.0, 0.1)] == list(range(25, 251, 25))
    assert checkpoint_schedule(4, 1.5, None) == [(4, 1.0), (6, 1.5)]
    assert checkpoint_schedule(10, 2.0, None, at=[0.1, 0.3]) == [(1, 0.1), (3, 0.3), (10, 1.0), (20, 2.0)]
    # the explicit epochs combine with a regular interval; out-of-range ones are ignored
    assert checkpoint_schedule(10, 1.0, 0.5, at=[0.3, 5.0]) == [(3, 0.3), (5, 0.5), (10, 1.0)]


def test_schedule_segments_end_at_every_mark():
    marks = Schedule.checkpoints(10, 2.0, at=[0.1, 0.3])
    assert marks.segments(0) == [(0, 1, 1, 0), (1, 2, 2, 1), (2, 3, 7, 3), (3, 4, 10, 10)]
    assert marks.segments(3) == [(2, 3, 7, 3), (3, 4, 10, 10)]  # a resume at a mark
    assert Schedule.epochs(5, 4).segments(0) == [(0, 4, 5, 0)]  # adapters: one fit call
    assert Schedule.epochs(5, 4).segments(10) == [(2, 4, 5, 10)]


def test_length_grouped_batches_cover_every_row_once_with_little_padding():
    rng = np.random.default_rng(0)
    lengths = np.minimum(rng.geometric(1 / 14, size=1000) + 2, 64)  # SST-2-like: many short rows
    for window in (0, 1, 50):
        batches = length_grouped_batches(lengths, 32, window, np.random.default_rng([0, 1]))
        assert len(batches) == -(-1000 // 32)
        assert all(len(b) == 32 for b in batches[:-1]) and len(batches[-1]) == 1000 - 31 * 32
        assert sorted(np.concatenate(batches).tolist()) == list(range(1000))
        again = length_grouped_batches(lengths, 32, window, np.random.default_rng([0, 1]))
        assert all((a == b).all() for a, b in zip(batches, again))  # seeded: a resume sees the same batches

    def padded(batches):
        return sum(bucket_length(int(lengths[b].max()), 64, fine=True) * len(b) for b in batches) / lengths.sum()

    plain = padded(length_grouped_batches(lengths, 32, 0, np.random.default_rng(0)))
    grouped = padded(length_grouped_batches(lengths, 32, 50, np.random.default_rng(0)))
    assert grouped < plain / 2
    # the batch order is shuffled: short and long batches are mixed through the epoch
    maxima = [int(lengths[b].max()) for b in length_grouped_batches(lengths, 32, 50, np.random.default_rng(0))]
    assert maxima != sorted(maxima)
    with pytest.raises(FinetuneError, match="group-by-length"):
        FinetuneConfig(task="sst2", out="x", group_by_length=-1)


def test_bucket_lengths():
    assert [bucket_length(n, 384) for n in (1, 17, 33, 65, 200, 384)] == [16, 32, 64, 128, 256, 384]
    assert [bucket_length(n, 384, fine=True) for n in (1, 17, 40, 100, 129, 200, 384)] == [16, 32, 48, 112, 192,
                                                                                              256, 384]
    assert bucket_length(60, 50, fine=True) == 50


def test_checkpoint_at_validated(tmp_path):
    with pytest.raises(FinetuneError, match="checkpoint-at"):
        FinetuneConfig(task="sst2", out=str(tmp_path), epochs=1.0, checkpoint_at=[0.5, 1.5])
    assert FinetuneConfig(task="sst2", out=str(tmp_path), epochs=2.0, checkpoint_at=[1, 0.3]).checkpoint_at == [0.3, 1.0]


def test_mean_pooling_head_reads_the_mean_of_the_real_tokens():
    """``pooling="mean"``: the head reads the last layer's mean over real
    tokens (the sentence-transformers pooling), so padding changes nothing;
    ``"cls"`` reads BERT's pooler; the choice survives the task's config."""
    keras.utils.set_random_seed(0)
    backbone = load_backbone(resolve_backbone(None))
    mean_task = BertTask(backbone, "classification", num_labels=3, pooling="mean")
    cls_task = BertTask(backbone, "classification", num_labels=3)
    ids = np.array([[101, 7592, 2088, 102, 0, 0]])
    batch = {"token_ids": ids, "segment_ids": np.zeros_like(ids), "padding_mask": (ids > 0).astype("int32")}
    hidden = np.asarray(backbone(batch)["sequence_output"])[0, :4]  # the 4 real tokens
    head = mean_task.get_layer("head")
    expected = np.asarray(head(hidden.mean(0, keepdims=True)))
    np.testing.assert_allclose(np.asarray(mean_task(batch)), expected, rtol=1e-4, atol=1e-5)
    short = {k: v[:, :4] for k, v in batch.items()}  # the same text without padding
    np.testing.assert_allclose(np.asarray(mean_task(short)), np.asarray(mean_task(batch)), rtol=1e-4, atol=1e-5)
    pooled = np.asarray(backbone(batch)["pooled_output"])
    np.testing.assert_allclose(np.asarray(cls_task(batch)), np.asarray(cls_task.get_layer("head")(pooled)),
                               rtol=1e-4, atol=1e-5)
    assert BertTask.from_config(mean_task.get_config()).pooling == "mean"
    with pytest.raises(FinetuneError, match="--pooling must be one of auto, cls, mean, got .max."):
        FinetuneConfig(task="sst2", out="unused", pooling="max")


def test_sst2_run_writes_checkpoints_results_and_predictions(sst2_run, shared_data):
    ckpts = sorted(p.name for p in (sst2_run / "checkpoints").iterdir())
    assert ckpts == ["epoch-0.50", "epoch-1.00"]
    for name in ckpts:
        folder = sst2_run / "checkpoints" / name
        for f in ("config.json", "model.weights.h5", "task.json", "task.weights.h5", "tokenizer/tokenizer.json",
                  "checkpoint.json", "bertvision_backbone.json", "predictions/dev.npz"):
            assert (folder / f).is_file(), f"{name}/{f}"
        # the head only: no optimizer moments (twice the backbone) in a checkpoint
        assert (folder / "task.weights.h5").stat().st_size < 100_000
    r = RunFolder(sst2_run).results()
    assert (r.run_type, r.method, r.task, r.main_metric) == ("finetune", "bert_finetune", "sst2", "accuracy")
    assert [h.epoch for h in r.history] == [0.5, 1.0]
    assert [h.step for h in r.history] == [2, 3]
    # the default pooling (auto) reads the embedded MiniLM's mean: the whole backbone but its pooler
    # (384 x 384 + 384, which then feeds nothing), and the head
    assert r.hyperparameters["pooling"] == "mean"
    assert r.trainable_params == r.backbone_params - (384 * 384 + 384) + 384 * 2 + 2
    assert r.backbone_params == 22_713_216 and r.param_share == pytest.approx(r.trainable_params / r.backbone_params)
    assert r.dev_metrics == r.history[-1].dev
    assert r.best_dev_metrics["accuracy"] == max(h.dev["accuracy"] for h in r.history)
    assert r.train_examples == 48 and r.train_examples_per_s > 0
    assert not (sst2_run / "state").exists()  # the training state goes once the run is complete
    preds = Predictions.load(sst2_run / "predictions" / "dev.npz")
    from bertvision.data.readers import load_examples

    dev = load_examples("sst2", "dev", shared_data / "glue" / "SST-2", limit=48).examples
    assert preds.uids.tolist() == [e.uid for e in dev]
    assert preds.labels.tolist() == [e.label for e in dev]
    np.testing.assert_allclose(preds.probabilities.sum(axis=1), 1.0, rtol=1e-5)
    assert preds.evaluate() == pytest.approx(r.dev_metrics)


def test_training_lowers_the_loss(sst2_run, shared_data):
    config = FinetuneConfig(task="sst2", out=str(sst2_run), data_dir=str(shared_data / "glue" / "SST-2"),
                            limit=48, max_seq_len=32, jit_compile=False, progress=False)
    finetuner = Finetuner(config)
    finetuner.prepare()
    finetuner.build()  # same seed: the head starts as the run's did
    before = finetuner.mean_loss()
    checkpoint = latest_checkpoint(sst2_run)
    assert checkpoint.name == "epoch-1.00"
    task = BertTask.from_preset(str(checkpoint))  # a checkpoint is a keras-hub task preset
    assert isinstance(task, BertTask) and task.task_kind == "classification"
    finetuner.model.set_weights(task.get_weights())  # the same model, the trained weights
    assert finetuner.mean_loss() < before - 0.005


def extract_dev(shared_data, out, *backbone) -> np.ndarray:
    """`pipelines.extract` of the first 8 SST-2 dev examples (32 tokens, no XLA) into `out`, with the
    embedded MiniLM or ``--backbone CHECKPOINT``; their activations as float32. (A LoRA run's checkpoint
    as a backbone: tests/test_own_data_finetune.py's LoRA test.)"""
    assert extract_cli.main(["--task", "sst2", "--data-dir", str(shared_data / "glue" / "SST-2"), "--split", "dev",
                             "--limit", "8", "--max-seq-len", "32", "--no-jit", "--no-progress", "--out", str(out),
                             *map(str, backbone)]) == 0
    store = st.open_store(str(out))
    return np.concatenate([f["activations"].numpy() for f, _ in store.dataset("dev", 8)]).astype(np.float32)


def test_checkpoint_is_a_backbone_for_extract(sst2_run, shared_data, tmp_path):
    ckpt = sst2_run / "checkpoints" / "epoch-1.00"
    acts = {"base": extract_dev(shared_data, tmp_path / "base"),
            "tuned": extract_dev(shared_data, tmp_path / "tuned", "--backbone", ckpt)}
    tuned = st.open_store(str(tmp_path / "tuned"))
    assert tuned.backbone["kind"] == "keras_hub" and tuned.backbone["name"] == "epoch-1.00"
    assert acts["base"].shape == acts["tuned"].shape == (8, 7, 384)
    # Embeddings moved a little, the last layer more; neither is identical.
    diff = np.abs(acts["base"] - acts["tuned"]).mean(axis=(0, 2))
    assert diff[0] > 0 and diff[-1] > 1e-3, diff


def test_killed_run_resumes_exactly(sst2_run, shared_data, tmp_path):
    """kill -9 after the first checkpoint, run again: the same history, checkpoints
    and predictions as the uninterrupted run (weights, optimizer, dropout state
    and batch order restored)."""
    import signal

    run = tmp_path / "sst2"
    args = [*SST2_ARGS, "--data-dir", str(shared_data / "glue" / "SST-2"), "--out", str(run)]
    assert kill_when_saved(args, run, step=2) == -signal.SIGKILL, "the run finished before it could be killed"
    assert not (run / "results.json").exists()
    (run / "checkpoints" / ".epoch-1.00.tmp-deadbeef").mkdir(parents=True, exist_ok=True)  # a save killed half-way
    # the resume: the command's main(argv) in this process (the kill needed a process; this needs none)
    code, _, err = run_main(finetune_cli.main, *args)
    assert code == 0, err[-3000:]
    assert "resuming from step 2/3" in err
    r, original = RunFolder(run).results(), RunFolder(sst2_run).results()
    assert r.resumed_from == {"step": 2, "epoch": 0.5}
    for a, b in zip(r.history, original.history):
        assert (a.epoch, a.step, a.loss, a.dev) == (b.epoch, b.step, b.loss, b.dev)
    np.testing.assert_array_equal(Predictions.load(run / "predictions" / "dev.npz").probabilities,
                                  Predictions.load(sst2_run / "predictions" / "dev.npz").probabilities)
    assert (run / "checkpoints" / "epoch-1.00" / "task.weights.h5").is_file()


def test_other_settings_are_refused(sst2_run, shared_data, capsys):
    args = [*SST2_ARGS, "--data-dir", str(shared_data / "glue" / "SST-2"), "--out", str(sst2_run), "--lr", "3e-5"]
    with pytest.raises(SystemExit) as err:
        finetune_cli.main(args)
    assert err.value.code == 2
    assert "other settings (lr)" in capsys.readouterr().err


def test_squad_finetune_windows_and_metrics(shared_data, tmp_path, capsys):
    out = tmp_path / "squad"
    args = ["--task", "squad_v2", "--data-dir", str(shared_data / "squad2"), "--train-split", "dev-v2.0.Normans_CCT",
            "--eval-split", "dev-v2.0.Rhine", "--limit", "8", "--max-seq-len", "64", "--doc-stride", "32",
            "--max-query-len", "24", "--batch-size", "8", "--epochs", "1", "--checkpoint-every", "0.5",
            "--lr", "1e-4", "--no-jit", "--no-progress", "--out", str(out)]
    assert finetune_cli.main(args) == 0
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["epoch-0.50", "epoch-1.00"]
    # --no-progress drops the bar, not the news: one line per checkpoint with its dev metrics
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("checkpoint epoch")]
    assert [line.split(" (step")[0] for line in lines] == ["checkpoint epoch 0.5", "checkpoint epoch 1"]
    assert all(" f1=" in line and "exact=" in line for line in lines)
    r = RunFolder(out).results()
    assert r.main_metric == "f1" and r.eval_splits == ["dev-v2.0.Rhine"] and r.dev_metrics["total"] == 8
    for key in ("exact", "f1", "HasAns_f1", "best_f1"):
        assert 0.0 <= r.dev_metrics[key] <= 100.0
    first, last = r.history
    assert last.loss < first.loss  # mean training loss over each half epoch
    p = Predictions.load(out / "predictions" / "dev-v2.0.Rhine.npz")
    assert len(p.uids) == 8 and len(p.window_uids) > 8  # contexts longer than a 64-token window
    assert p.start_logits.shape[0] == len(p.window_uids) and p.start_logits.shape[1] <= 64
    assert p.offsets.shape == p.start_logits.shape + (2,)
    assert set(p.window_uids.tolist()) == set(p.uids.tolist())
    assert p.evaluate() == pytest.approx(r.dev_metrics)


@pytest.mark.parametrize("flags, message", [
    (["--epochs", "0"], "--epochs must be > 0, got 0.0"),
    (["--batch-size", "-1"], "--batch-size must be a positive integer, got -1"),
    (["--lr", "0"], "--lr must be > 0, got 0.0"),
    (["--warmup", "1"], "--warmup must be in [0, 1), got 1.0"),
    (["--checkpoint-every", "2"], "--checkpoint-every must be in (0, 1], got 2.0"),
    (["--max-seq-len", "2"], "max_seq_len=2 is too small; need at least 3 ([CLS] x [SEP])"),
    (["--sample", "0"], "--sample must be a positive integer, got 0"),
    (["--dropout", "1.5"], "--dropout must be in [0, 1), got 1.5"),
])
def test_bad_flags_are_refused_before_anything_is_written(shared_data, tmp_path, capsys, flags, message):
    out = tmp_path / "run"
    with pytest.raises(SystemExit) as err:
        finetune_cli.main(["--task", "sst2", "--data-dir", str(shared_data / "glue" / "SST-2"), "--out", str(out),
                           *flags])
    assert err.value.code == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == f"error: {message}"
    assert not out.exists()
