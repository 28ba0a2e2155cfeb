"""Adapter models trained on stored BERT activations.

Example:
```python
from bertvision.models import ModelConfig, build_model, trainable_params

config = ModelConfig(kind="adapter_pooler", task_kind="classification",
                     num_labels=2, num_layers=7, hidden=384, max_seq_len=128)
model = build_model(config)
trainable_params(model)
```
"""

import importlib

from bertvision.models.config import (
    BERT_POOLINGS,
    FIT_KINDS,
    KINDS,
    LAYER_POOLINGS,
    STORE_DERIVED,
    TASK_KINDS,
    TOKEN_POOLINGS,
    WINDOW_POOLINGS,
    ModelConfig,
)

# The Keras parts are imported when first used (PEP 562), so that the
# configuration above (what a command's --help lists) loads without Keras.
_LAZY = {
    **dict.fromkeys(("CosineResidualHead", "Dropout", "LayerAttention", "LayersToChannels", "MaskedAttentionPooling",
                     "MaskedMaxPooling", "PairCosines",
                     "MaskedMeanPooling", "NormalizedProjection", "PairFeatures", "ScalarMix", "SelectLayer",
                     "SpanHead", "TaskHead", "TransformerBlock", "MergeWindows", "SplitWindows"),
                    "bertvision.models.layers"),
    **dict.fromkeys(("build_model", "layer_weights", "trainable_params"), "bertvision.models.zoo"),
}


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


