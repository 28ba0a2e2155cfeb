"""`ModelConfig`: the typed, JSON-serialisable description of an adapter model."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from typing import Any

KINDS = ("linear_probe", "scalar_mix", "adapter_pooler", "cnn")
TASK_KINDS = ("classification", "regression", "span")
LAYER_POOLINGS = ("scalar_mix", "attention", "concat")
TOKEN_POOLINGS = ("attention_mean", "attention", "mean")
INPUT_DTYPES = ("float16", "bfloat16", "float32")


@dataclass
class ModelConfig:
    """Everything `build_model` needs to build an adapter.

    Args:
        kind: one of `"linear_probe"`, `"scalar_mix"`, `"adapter_pooler"`,
            `"cnn"`.
        task_kind: `"classification"`, `"regression"` or `"span"`.
        num_labels: number of classes (classification); forced to 1 for
            regression; ignored (2 logits per token) for span.
        num_layers: stored layers (embeddings + transformer layers), e.g. 7
            for MiniLM-L6, 13 for BERT-base.
        hidden: hidden size of the stored activations (384, 768, ...).
        tokens: tokens per example for `sequence` stores, `None` for vector
            (`cls`/`mean`) stores.
        adapter_dim: width of the down-projection (`adapter_pooler`).
        dropout: dropout rate before the head.
        layer_pooling: how `adapter_pooler` combines layers:
            `"scalar_mix"` (learned softmax weights, mixed *before* the
            projection: cheapest), `"attention"` (per-example softmax weights
            over layers from a learned query) or `"concat"` (project every
            layer, concatenate: the original prototype, `num_layers` times
            more projection work).
        token_pooling: how `adapter_pooler` pools tokens of sequence input:
            `"attention_mean"` (masked attention pooling and masked mean,
            concatenated), `"attention"` or `"mean"`.
        layer_norm: normalise every layer's vectors (zero mean, unit variance
            over `hidden`) before mixing/projecting. Layers of a BERT have very
            different scales; used by `scalar_mix`, `adapter_pooler`, `cnn`.
        cnn_channels: per-layer projection width of `cnn` (hidden -> channels).
        cnn_filters: convolution filters of `cnn`.
        cnn_kernel_size: convolution width of `cnn` (over tokens for sequence
            input, over layers for vector input).
        input_dtype: dtype of the `activations` input (as stored).
        layers: indices of the stored layers the model reads (e.g. the last
            four, or every other one); `None` reads all `num_layers`. The
            model's input stays the whole stored stack.
        name: optional model name.

    Example:
    ```python
    config = ModelConfig(kind="adapter_pooler", num_labels=2, tokens=128)
    same = ModelConfig.from_json(config.to_json())
    assert same == config
    ```
    """

    kind: str = "adapter_pooler"
    task_kind: str = "classification"
    num_labels: int = 2
    num_layers: int = 7
    hidden: int = 384
    tokens: int | None = None
    adapter_dim: int = 64
    dropout: float = 0.1
    layer_pooling: str = "scalar_mix"
    token_pooling: str = "attention_mean"
    layer_norm: bool = True
    cnn_channels: int = 16
    cnn_filters: int = 64
    cnn_kernel_size: int = 3
    input_dtype: str = "float16"
    layers: list | None = None
    name: str | None = None

    def __post_init__(self):
        self.validate()

    def validate(self) -> None:
        """Raise `ValueError` for an inconsistent configuration."""

        def choice(field, value, options):
            if value not in options:
                raise ValueError(
                    f"ModelConfig.{field}={value!r} is not one of {options}"
                )

        choice("kind", self.kind, KINDS)
        choice("task_kind", self.task_kind, TASK_KINDS)
        choice("layer_pooling", self.layer_pooling, LAYER_POOLINGS)
        choice("token_pooling", self.token_pooling, TOKEN_POOLINGS)
        choice("input_dtype", self.input_dtype, INPUT_DTYPES)
        for field in (
            "num_layers",
            "hidden",
            "adapter_dim",
            "cnn_channels",
            "cnn_filters",
            "cnn_kernel_size",
        ):
            value = getattr(self, field)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(
                    f"ModelConfig.{field} must be a positive int, got {value!r}"
                )
        if self.layers is not None:
            layers = list(self.layers)
            if (not layers or any(not isinstance(i, int) or isinstance(i, bool) for i in layers)
                    or layers != sorted(set(layers)) or layers[0] < 0 or layers[-1] >= self.num_layers):
                raise ValueError(
                    f"ModelConfig.layers must be increasing distinct indices in 0..{self.num_layers - 1}, "
                    f"got {self.layers!r}"
                )
        if self.tokens is not None and (
            not isinstance(self.tokens, int) or self.tokens < 1
        ):
            raise ValueError(
                f"ModelConfig.tokens must be None or a positive int, "
                f"got {self.tokens!r}"
            )
        if not 0.0 <= float(self.dropout) < 1.0:
            raise ValueError(f"ModelConfig.dropout must be in [0, 1), got {self.dropout}")
        if self.task_kind == "classification" and self.num_labels < 2:
            raise ValueError(
                f"classification needs num_labels >= 2, got {self.num_labels}"
            )
        if self.task_kind == "regression" and self.num_labels != 1:
            raise ValueError(
                f"regression predicts one score: num_labels must be 1, "
                f"got {self.num_labels}"
            )
        if self.task_kind == "span" and self.tokens is None:
            raise ValueError(
                "task_kind='span' needs per-token activations (a 'sequence' "
                "store, ModelConfig.tokens set); this config describes a "
                "vector ('cls'/'mean') store (tokens=None)."
            )

    @property
    def is_sequence(self) -> bool:
        """True for `sequence` stores (`[batch, layers, tokens, hidden]`)."""
        return self.tokens is not None

    @property
    def activations_shape(self) -> tuple:
        """Per-example shape of the `activations` input."""
        if self.is_sequence:
            return (self.num_layers, self.tokens, self.hidden)
        return (self.num_layers, self.hidden)

    @property
    def input_shape(self) -> tuple:
        """Shape of the model's `activations` input: the token length varies
        per batch (the reader pads each batch to a power-of-two bucket), so
        it is `None`; `tokens` records the store's `max_seq_len`."""
        if self.is_sequence:
            return (self.num_layers, None, self.hidden)
        return (self.num_layers, self.hidden)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent, sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ModelConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(
                f"unknown ModelConfig fields {unknown}; known: {sorted(known)}"
            )
        return cls(**data)

    @classmethod
    def from_json(cls, text: str) -> "ModelConfig":
        return cls.from_dict(json.loads(text))

    @classmethod
    def for_dataset(
        cls, element_spec, kind: str, task_kind: str, num_labels: int = 2, **kwargs
    ) -> "ModelConfig":
        """A config whose input shape matches a store dataset.

        `element_spec` is `dataset.element_spec` of `store.dataset(...)` (a
        `(features, labels)` pair or just the features dict).
        """
        features = element_spec[0] if isinstance(element_spec, tuple) else element_spec
        shape = tuple(features["activations"].shape)[1:]
        if len(shape) == 3:
            num_layers, tokens, hidden = shape
        elif len(shape) == 2:
            (num_layers, hidden), tokens = shape, None
        else:
            raise ValueError(
                f"activations must be [batch, layers, hidden] or "
                f"[batch, layers, tokens, hidden], got {features['activations'].shape}"
            )
        dtype = features["activations"].dtype
        dtype = getattr(dtype, "name", str(dtype))
        if task_kind == "regression":
            num_labels = 1
        return cls(
            kind=kind,
            task_kind=task_kind,
            num_labels=num_labels,
            num_layers=int(num_layers),
            hidden=int(hidden),
            tokens=None if tokens is None else int(tokens),
            input_dtype=dtype,
            **kwargs,
        )
