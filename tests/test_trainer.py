"""bertvision.training.trainer as a module: schedule, optimizer, the loss
table and the Trainer on a small Keras model over a few dozen seeded
examples (no store, no BERT). fit, fine-tuning and answerability test the
trainer end to end on real data."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from bertvision.errors import ConfigError
from bertvision.runs import Predictions, RunFolder
from bertvision.training.trainer import (NO_DECAY, Schedule, Trainer, WarmupDecay, compile_for_task, make_optimizer,
                                         task_losses)


def test_schedule_marks_and_segments():
    assert Schedule.epochs(10, 2).marks == ((10, 1.0), (20, 2.0))
    s = Schedule.checkpoints(10, 2.0, every=None, at=[0.1, 0.3])
    assert s.marks == ((1, 0.1), (3, 0.3), (10, 1.0), (20, 2.0)) and s.total_steps == 20
    assert s.segments(0) == [(0, 1, 1, 0), (1, 2, 2, 1), (2, 3, 7, 3), (3, 4, 10, 10)]
    assert s.segments(10) == [(3, 4, 10, 10)]  # resumed at the 1-epoch mark: the last segment only
    assert Schedule.checkpoints(10, 0.5, every=0.2).marks == ((2, 0.2), (4, 0.4), (5, 0.5))


def test_warmup_decay_optimizer_and_losses():
    lr = WarmupDecay(1e-3, total_steps=1000, warmup_steps=100)
    assert [round(float(lr(s)), 6) for s in (0, 50, 100, 1000)] == [0.0, 0.0005, 0.001, 0.0]
    cosine = WarmupDecay(1e-3, total_steps=100, decay="cosine")
    assert float(cosine(50)) == pytest.approx(5e-4, rel=1e-4)
    assert float(WarmupDecay(1e-3, 100, decay="constant")(90)) == pytest.approx(1e-3)
    with pytest.raises(ConfigError, match="decay must be one of"):
        WarmupDecay(1e-3, 100, decay="step")
    assert WarmupDecay.from_config(lr.get_config()).get_config() == lr.get_config()
    optimizer = make_optimizer(1e-3, total_steps=100, weight_decay=0.1, clipnorm=1.0)
    assert optimizer.global_clipnorm == 1.0 and optimizer.weight_decay == 0.1
    assert set(NO_DECAY) == {"bias", "gamma", "beta", "mix_logits"}
    assert task_losses("regression")[1] is None
    span_loss, weights = task_losses("span")
    assert set(span_loss) == {"start_logits", "end_logits"} and weights == {"start_logits": 0.5, "end_logits": 0.5}
    with pytest.raises(ConfigError, match="unknown task kind"):
        task_losses("token")


def _data(n=48, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 4)).astype("float32")
    y = (x[:, 0] + 0.5 * x[:, 1] > 0).astype("int32")
    return x, y


def _trainer(state_dir, epochs=4, patience=None, seed=0):
    keras.utils.set_random_seed(seed)
    x, y = _data()
    dev_x, dev_y = _data(32, seed=1)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    steps = len(x) // 8
    schedule = Schedule.epochs(steps, epochs)
    compile_for_task(model, "classification", make_optimizer(0.3, schedule.total_steps, warmup=0.0))

    def train_data(first_step):
        ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(8).repeat()
        return ds.skip(first_step % steps)

    def evaluate(m):
        preds = Predictions("sst2", "dev", np.arange(len(dev_x)).astype(str),
                            probabilities=tf.nn.softmax(m(dev_x)).numpy(), labels=dev_y)
        return preds.evaluate(), {"dev": preds}

    return Trainer(model, main_metric="accuracy", schedule=schedule, train_data=train_data, evaluate=evaluate,
                   state_dir=state_dir, select_best=True, patience=patience, examples_per_step=8, verbose=0)


def test_trainer_learns_keeps_the_best_and_resumes_from_its_state(tmp_path):
    run = RunFolder(tmp_path / "run")
    outcome = _trainer(run.state_dir).run()
    assert [h.epoch for h in outcome.history] == [1.0, 2.0, 3.0, 4.0]
    assert outcome.best_metrics["accuracy"] >= 0.8  # a linearly separable rule is learnt
    assert outcome.best_metrics == max((h.dev for h in outcome.history), key=lambda d: d["accuracy"])
    assert outcome.predictions["dev"].evaluate() == outcome.best_metrics  # the best mark's weights are kept
    assert all(h.loss is not None and h.examples_per_s > 0 for h in outcome.history)
    assert len(list(run.state_dir.iterdir())) == 1  # the newest state only
    again = _trainer(run.state_dir).run()  # a finished run started again trains nothing more
    assert again.resumed_from == {"step": 24, "epoch": 4.0} and again.history == outcome.history
    run.clear_state()
    assert not run.state_dir.exists()


def test_trainer_stops_early_after_patience(tmp_path):
    trainer = _trainer(None, epochs=30, patience=1)
    outcome = trainer.run()
    assert outcome.stopped_early and len(outcome.history) < 30
    best = [h.epoch for h in outcome.history].index(outcome.best_epoch)
    assert len(outcome.history) - 1 - best == 1  # one mark without improvement, then stop
