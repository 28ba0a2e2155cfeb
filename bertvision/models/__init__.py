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

from bertvision.models.config import (
    KINDS,
    LAYER_POOLINGS,
    TASK_KINDS,
    TOKEN_POOLINGS,
    ModelConfig,
)
from bertvision.models.layers import (
    Dropout,
    LayerAttention,
    LayersToChannels,
    MaskedAttentionPooling,
    MaskedMaxPooling,
    MaskedMeanPooling,
    NormalizedProjection,
    PairFeatures,
    ScalarMix,
    SelectLayer,
    SpanHead,
    TaskHead,
    TransformerBlock,
)
from bertvision.models.zoo import build_model, layer_weights, trainable_params

__all__ = [
    "Dropout",
    "KINDS",
    "LAYER_POOLINGS",
    "TASK_KINDS",
    "TOKEN_POOLINGS",
    "ModelConfig",
    "build_model",
    "layer_weights",
    "trainable_params",
    "LayerAttention",
    "LayersToChannels",
    "MaskedAttentionPooling",
    "MaskedMaxPooling",
    "MaskedMeanPooling",
    "NormalizedProjection",
    "PairFeatures",
    "ScalarMix",
    "SelectLayer",
    "SpanHead",
    "TaskHead",
    "TransformerBlock",
]
