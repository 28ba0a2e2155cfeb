"""`ModelConfig`: the typed, JSON-serialisable description of an adapter model."""

from __future__ import annotations

import json
from dataclasses import dataclass

from bertvision.config import (DTYPES, PAIR_MODES, PER_TOKEN_KINDS, TASK_KINDS, ConfigBase, check_choice, check_fraction,
                               check_non_negative, check_nonnegative_int, check_positive_int)
from bertvision.errors import BertVisionError, ConfigError

__all__ = ["BERT_POOLINGS", "KINDS", "LAYER_POOLINGS", "PER_TOKEN_KINDS", "STORE_DERIVED", "TOKEN_POOLINGS",
           "WINDOW_POOLINGS", "ModelConfig"]

KINDS = ("linear_probe", "scalar_mix", "adapter_pooler", "cnn")  # trained adapters (what a search tries)
# every method pipelines.fit runs: the adapters and the zero-shot cosine of a separately encoded pair (no training)
FIT_KINDS = KINDS + ("cosine",)
LAYER_POOLINGS = ("scalar_mix", "attention", "concat")
# ScalarMix's default multiplier of its logits (its learning-rate factor under Adam)
MIX_LOGIT_SCALE = 100.0
TOKEN_POOLINGS = ("attention_mean", "attention", "mean", "cls")
WINDOW_POOLINGS = ("mean", "max", "attention")  # a long document's windows -> one prediction
# what a fine-tuned BERT's sentence head reads: the pooler over [CLS], or the mean of the last layer's tokens
BERT_POOLINGS = ("cls", "mean")
# the fields a store determines (`ModelConfig.from_store`), not the user
STORE_DERIVED = ("task_kind", "num_labels", "num_layers", "hidden", "max_seq_len", "input_dtype", "pair_mode",
                 "windows")


@dataclass
class ModelConfig(ConfigBase):
    """Everything `build_model` needs to build an adapter.

    Args:
        kind: one of `"linear_probe"`, `"scalar_mix"`, `"adapter_pooler"`,
            `"cnn"`.
        task_kind: `"classification"`, `"regression"`, `"span"` or
            `"token_classification"` (a class per token).
        num_labels: number of classes (classification, per token for
            token classification); forced to 1 for
            regression; ignored (2 logits per token) for span.
        num_layers: stored layers (embeddings + transformer layers), e.g. 7
            for MiniLM-L6, 13 for BERT-base.
        hidden: hidden size of the stored activations (384, 768, ...).
        max_seq_len: the store's tokens per example for `sequence` stores,
            `None` for vector (`cls`/`mean`) stores.
        adapter_dim: width of the down-projection (`adapter_pooler`).
        transformer_blocks: transformer encoder blocks (`TransformerBlock`,
            keras-hub's post-norm layout, feed-forward width
            `2 * adapter_dim`) that `adapter_pooler` runs over the projected
            tokens before pooling: a small side network over the mixed
            layers. 0 (the default) runs none. Sequence stores only.
        transformer_heads: attention heads of those blocks; must divide
            `adapter_dim`.
        dropout: dropout rate before the head.
        layer_pooling: how `adapter_pooler` combines layers:
            `"scalar_mix"` (learned softmax weights, mixed *before* the
            projection: cheapest), `"attention"` (per-example softmax weights
            over layers from a learned query) or `"concat"` (project every
            layer, concatenate: the original prototype, `num_layers` times
            more projection work).
        token_pooling: how `adapter_pooler` pools tokens of sequence input:
            `"attention_mean"` (masked attention pooling and masked mean,
            concatenated), `"attention"`, `"mean"` or `"cls"` (the first
            token only). `"cls"` also makes `linear_probe` and `scalar_mix`
            read the first token instead of the masked mean.
        mix_logit_scale: multiplier of a `ScalarMix`'s logits (weights
            `softmax(mix_logit_scale * s)`), which under Adam multiplies the
            mix's learning rate by that factor. At 1 (AllenNLP's convention)
            the default recipe left a mix near uniform even where one layer
            held the whole answer (tests/test_layer_mix.py); 0 freezes the
            mix at uniform weights.
        layer_norm: normalise every layer's vectors (zero mean, unit variance
            over `hidden`) before mixing/projecting. Layers of a BERT have very
            different scales; used by `scalar_mix`, `adapter_pooler`, `cnn`.
        cnn_channels: per-layer projection width of `cnn` (hidden -> channels).
        cnn_filters: convolution filters of `cnn`.
        cnn_kernel_size: convolution width of `cnn` (over tokens for sequence
            input, over layers for vector input).
        input_dtype: dtype of the `activations` input (as stored).
        pair_mode: `"cross"` (one vector stack per example: a pair encoded
            together) or `"separate"` (a pair task's store with each text
            encoded on its own, input `[2, num_layers, hidden]`): the kind's
            layers encode each text with shared weights into `u` and `v`,
            and the head reads `[u, v, |u - v|, u * v]`. Vector stores only.
        pair_cosine: (``pair_mode="separate"``, regression or two
            classes) give the pair head the cosine of the two texts at every
            stored layer as more inputs, and start it as the zero-shot
            cosine of the last read layer with a learned correction
            (`CosineResidualHead`, zero-initialised): before training a
            regression head predicts that cosine exactly.
        windows: the store keeps long documents as windows (``pipelines.extract
            --doc-stride`` on a sentence-level task): the input gains a window
            axis (`[B, W, L, H]` or `[B, W, L, T, H]`, with `window_mask`
            `[B, W]`); the kind's layers up to the head encode every window
            (`window_encoder`, one set of weights) and `window_pooling` pools
            them to one vector per document before the head.
        window_pooling: how a document's windows are pooled: `"mean"` (masked
            mean), `"max"` (masked max) or `"attention"` (softmax over the
            real windows of a learned query's scores, which starts as the
            mean).
        layers: indices of the stored layers the model reads (e.g. the last
            four, or every other one); `None` reads all `num_layers`. The
            model's input stays the whole stored stack.
        name: optional model name.

    Example:
    ```python
    config = ModelConfig(kind="adapter_pooler", num_labels=2, max_seq_len=128)
    same = ModelConfig.from_json(config.to_json())
    assert same == config
    ```
    """

    kind: str = "adapter_pooler"
    task_kind: str = "classification"
    num_labels: int = 2
    num_layers: int = 7
    hidden: int = 384
    max_seq_len: int | None = None
    adapter_dim: int = 64
    transformer_blocks: int = 0
    transformer_heads: int = 4
    dropout: float = 0.1
    layer_pooling: str = "scalar_mix"
    token_pooling: str = "attention_mean"
    mix_logit_scale: float = MIX_LOGIT_SCALE
    layer_norm: bool = True
    cnn_channels: int = 16
    cnn_filters: int = 64
    cnn_kernel_size: int = 3
    input_dtype: str = "float16"
    pair_mode: str = "cross"
    pair_cosine: bool = False
    windows: bool = False
    window_pooling: str = "mean"
    layers: list | None = None
    name: str | None = None

    error = ConfigError

    def validate(self) -> None:
        """Raise `ConfigError` for an inconsistent configuration (messages
        name the `pipelines.fit` flag of the field)."""
        check_choice("kind", self.kind, FIT_KINDS)
        if self.kind == "cosine" and (self.pair_mode != "separate" or self.task_kind not in ("regression", "classification")
                                      or (self.task_kind == "classification" and self.num_labels != 2)):
            raise ConfigError(f"--adapter cosine scores a separately encoded pair (a store extracted with --pair-mode "
                              f"separate) for regression or two classes; got pair_mode={self.pair_mode!r}, "
                              f"task_kind={self.task_kind!r}, num_labels={self.num_labels}")
        check_choice("task_kind", self.task_kind, TASK_KINDS)
        check_choice("layer_pooling", self.layer_pooling, LAYER_POOLINGS)
        check_choice("token_pooling", self.token_pooling, TOKEN_POOLINGS)
        check_choice("input_dtype", self.input_dtype, DTYPES)
        check_choice("pair_mode", self.pair_mode, PAIR_MODES)
        check_choice("window_pooling", self.window_pooling, WINDOW_POOLINGS)
        if not self.windows and self.window_pooling != "mean":
            raise ConfigError(f"--window-pooling {self.window_pooling} pools a long document's windows, and this "
                              "store keeps none (extract it with --doc-stride to store documents as windows)")
        if self.windows and (self.per_token or self.pair_mode != "cross" or self.kind == "cosine"):
            raise ConfigError(f"windows (a long document's windows pooled to one prediction) are for "
                              f"classification, multi-label and regression of one text; got task_kind="
                              f"{self.task_kind!r}, pair_mode={self.pair_mode!r}, kind={self.kind!r}")
        if self.pair_mode == "separate" and (self.max_seq_len is not None or self.per_token):
            raise ConfigError("pair_mode='separate' reads one vector per text and layer (a 'cls' or 'mean' store "
                              "extracted with --pair-mode separate); not sequence or span input")
        if self.pair_cosine and (self.pair_mode != "separate" or self.task_kind not in ("regression", "classification")
                                 or (self.task_kind == "classification" and self.num_labels != 2)):
            raise ConfigError(f"pair_cosine reads the cosine of a separately encoded pair (a store extracted with "
                              f"--pair-mode separate) for regression or two classes; got pair_mode="
                              f"{self.pair_mode!r}, task_kind={self.task_kind!r}, num_labels={self.num_labels}")
        for name in ("num_layers", "hidden", "adapter_dim", "transformer_heads", "cnn_channels", "cnn_filters",
                     "cnn_kernel_size"):
            check_positive_int(name, getattr(self, name))
        check_nonnegative_int("transformer_blocks", self.transformer_blocks)
        if self.transformer_blocks:
            if self.kind != "adapter_pooler" or self.max_seq_len is None:
                raise ConfigError(f"transformer_blocks={self.transformer_blocks} runs over the tokens of "
                                  f"adapter_pooler: it needs --adapter adapter_pooler and a 'sequence' store "
                                  f"(got kind={self.kind!r}, max_seq_len={self.max_seq_len})")
            if self.adapter_dim % self.transformer_heads:
                raise ConfigError(f"transformer_heads ({self.transformer_heads}) must divide adapter_dim "
                                  f"({self.adapter_dim})")
        if self.max_seq_len is not None:
            check_positive_int("max_seq_len", self.max_seq_len)
        check_fraction("dropout", self.dropout, low_open=False, high_open=True)
        check_non_negative("mix_logit_scale", self.mix_logit_scale)
        if self.layers is not None:
            layers = list(self.layers)
            if (not layers or any(not isinstance(i, int) or isinstance(i, bool) for i in layers)
                    or layers != sorted(set(layers)) or layers[0] < 0 or layers[-1] >= self.num_layers):
                raise ConfigError(f"ModelConfig.layers must be increasing distinct indices in "
                                  f"0..{self.num_layers - 1}, got {self.layers!r}")
        if self.task_kind in ("classification", "multi_label", "token_classification") and self.num_labels < 2:
            raise ConfigError(f"{self.task_kind} needs num_labels >= 2, got {self.num_labels}")
        if self.task_kind == "regression" and self.num_labels != 1:
            raise ConfigError(f"regression predicts one score: num_labels must be 1, got {self.num_labels}")
        if self.per_token and self.max_seq_len is None:
            raise ConfigError(f"task_kind={self.task_kind!r} needs per-token activations (a 'sequence' store, "
                              "ModelConfig.max_seq_len set); this config describes a vector ('cls'/'mean') "
                              "store (max_seq_len=None).")

    @property
    def per_token(self) -> bool:
        """True for task kinds predicted per token (span, token classification)."""
        return self.task_kind in PER_TOKEN_KINDS

    @property
    def is_sequence(self) -> bool:
        """True for `sequence` stores (`[batch, layers, tokens, hidden]`)."""
        return self.max_seq_len is not None

    @property
    def activations_shape(self) -> tuple:
        """Per-example shape of the `activations` input (``windows``: one window's)."""
        if self.is_sequence:
            return (self.num_layers, self.max_seq_len, self.hidden)
        return self.sides + (self.num_layers, self.hidden)

    @property
    def input_shape(self) -> tuple:
        """Shape of the model's `activations` input: the token length varies
        per batch (the reader pads each batch to a power-of-two bucket), so
        it is `None`; `max_seq_len` records the store's. ``windows``: a
        leading window axis, its length the batch's most windows."""
        return ((None,) if self.windows else ()) + self.window_shape

    @property
    def window_shape(self) -> tuple:
        """`input_shape` of one window (of one example without ``windows``)."""
        if self.is_sequence:
            return (self.num_layers, None, self.hidden)
        return self.sides + (self.num_layers, self.hidden)

    @property
    def sides(self) -> tuple:
        """Leading input axis of a separately encoded pair: `(2,)`, else `()`."""
        return (2,) if self.pair_mode == "separate" else ()

    @classmethod
    def from_store(cls, store, adapter: dict, error: type[BertVisionError] = ConfigError) -> "ModelConfig":
        """The complete config of an adapter on `store` (a
        `bertvision.store.format.Store`): the user's fields (`adapter`, with
        ``kind``) plus those the store determines (`STORE_DERIVED`). A saved
        config carries those too: they must still agree with the store.
        Raises `error` naming the field.

        >>> from bertvision.store.format import open_store
        >>> config = ModelConfig.from_store(open_store(STORE), {"kind": "cnn"})   # a MiniLM cls store
        >>> config.num_layers, config.hidden, config.num_labels
        (7, 384, 2)
        """
        derived = store.adapter_fields()
        for key in STORE_DERIVED:
            if key in adapter and adapter[key] != derived[key]:
                raise error(f"adapter {key}={adapter[key]!r} does not match the store {store.path} "
                            f"({derived[key]!r})")
        user = {k: v for k, v in adapter.items() if k not in STORE_DERIVED}
        try:
            return cls.from_dict({**user, **derived})
        except ConfigError as err:
            raise error(f"adapter settings: {err}") from err

    @staticmethod
    def user_fields(adapter: dict) -> dict:
        """The fields of `adapter` a user chose (not the store's, not the name;
        ``window_pooling`` only where the store keeps windows)."""
        return {k: v for k, v in adapter.items() if k not in STORE_DERIVED and k != "name"
                and (k != "window_pooling" or adapter.get("windows"))}

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "ModelConfig":
        return cls.from_dict(json.loads(text))
