"""experiments.squad_checkpoint reads a checkpoint's own SQuAD scores from checkpoint.json, as
pipelines.finetune writes it today and as it wrote it before the one trainer."""

from experiments.squad_checkpoint import checkpoint_metrics


def test_checkpoint_metrics_of_both_formats():
    dev = {"exact": 31.5, "f1": 37.6, "HasAns_f1": 52.2}
    config = {"task": "squad_v2", "eval_splits": ["dev"]}
    assert checkpoint_metrics({"metrics": dev, "config": config}, "dev") == dev
    assert checkpoint_metrics({"metrics": {"dev": dev}, "config": config}, "dev") == dev  # older checkpoints
    assert checkpoint_metrics({"metrics": dev, "config": config}, "test") is None  # not evaluated there
    assert checkpoint_metrics({"metrics": {}, "config": config}, "dev") is None
