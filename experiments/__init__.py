"""BertVision's experiments app: the studies behind docs/results.md,
docs/benchmarks.md and docs/scale.md, each a command
(``python -m experiments.NAME``) over the library, never a second copy of it.

Each experiment declares its plan as data (`experiments.reproduce.TaskPlan`
and its ``FULL_PLANS`` / ``QUICK_PLANS``; the others their argparse flags),
runs the library's own lifecycle (`bertvision.lifecycle.run_task`, through
fit, fine-tuning, answerability and ensembles) and renders its tables with
`bertvision.report.table`. Outputs go to ``experiments_out/`` by default;
the reproduction's rows are ``reproduction.json`` (never a run folder's
``results.json``).

The environment below is set once, here, before any module of the app
imports TensorFlow or Keras.
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
