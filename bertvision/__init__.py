"""BertVision: run BERT once, store every layer's activations, train tiny
Keras adapters on them.

The Python API (`bertvision.api`) is re-exported here and loaded on first
use, so that ``import bertvision`` stays light (no TensorFlow until a call
needs it)::

    import bertvision as bv
    store = bv.extract("sst2", "tfrecords/sst2", data_dir="../shared/data/glue/SST-2")
    run = bv.fit(store, adapter="adapter_pooler", out="runs/sst2-pooler")
    run.predict(["a gripping, funny film"]), run.evaluate("dev")
    bv.write_report([run], "reports/sst2")   # bertvision.api.report (bertvision.report is the package)
"""

import importlib

__version__ = "0.1.0"
__all__ = ["Run", "extract", "fit", "open_run", "open_store", "write_report"]


def __getattr__(name: str):
    if name in __all__:
        return getattr(importlib.import_module("bertvision.api"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
