"""`build_model(config)`: the adapter model zoo as Keras functional models."""

from __future__ import annotations

import dataclasses
import math

import keras

from bertvision.models.config import ModelConfig
from bertvision.models.layers import (
    CosineResidualHead,
    Dropout,
    LayerAttention,
    LayersToChannels,
    MaskedAttentionPooling,
    MaskedMaxPooling,
    MaskedMeanPooling,
    MergeWindows,
    NormalizedProjection,
    PairCosines,
    PairFeatures,
    ScalarMix,
    SelectLayer,
    SelectLayers,
    SpanHead,
    SplitWindows,
    TaskHead,
    TransformerBlock,
    WINDOW_POOLING_LAYERS,
)


def build_model(config: ModelConfig) -> keras.Model:
    """Build the adapter described by `config` (a functional `keras.Model`).

    Inputs (named as in the store's features dict): `activations`
    `[B, L, H]` or `[B, L, T, H]` (float16/bfloat16/float32) and, for
    sequence configs, `padding_mask` `[B, T]` (1 = real token).

    Outputs: classification logits `[B, num_labels]`; regression score `[B]`;
    span `{"start_logits": [B, T], "end_logits": [B, T]}` with padding masked
    to -1e9 (position 0, CLS, always valid); token classification logits
    `[B, T, num_labels]` (every kind keeps its per-token features and pools
    no tokens: the last layer, the scalar mix, the adapter projection, the
    convolution over tokens; a dense head per token).

    Kinds:
    - `linear_probe`: last layer (masked token mean for sequences) -> dense.
    - `scalar_mix`: masked token mean per layer -> standardise each layer ->
      softmax-weighted sum * gamma -> dense (span: per-token mix -> dense(2)).
    - `adapter_pooler`: standardised scalar mix of layers (per token) ->
      shared `hidden -> adapter_dim` GELU projection -> masked attention +
      mean pooling over tokens -> dropout -> dense. Mixing before projecting
      is exact for the linear mix and `num_layers` times cheaper. With
      `transformer_blocks` > 0, that many transformer encoder blocks run over
      the projected tokens before pooling (a side network).
    - `cosine` (``pair_mode="separate"``, regression or two classes): no
      encoder and no training: the cosine of the two texts' last read layer
      through `CosineResidualHead` (regression: the cosine itself; two
      classes: its threshold set by `bertvision.training.fit`).
    - `cnn`: standardised shared projection of every layer/token to
      `cnn_channels` -> layers become channels -> Conv1D over tokens (vector:
      over layers) -> masked mean + max pooling -> dropout -> dense.

    ``windows`` (a store of long documents as windows, `[B, W, L, H]` or
    `[B, W, L, T, H]` with `window_mask` `[B, W]` and a `padding_mask`
    `[B, W, T]`): the kind's layers up to the head encode every window
    (`window_encoder`) and ``window_pooling`` (masked mean, max or learned
    attention over the real windows) makes one vector per document.

    ``pair_mode="separate"`` (a store holding each text of a pair encoded on
    its own, `[B, 2, L, H]`): the kind's layers up to the head form a side
    encoder (`side_encoder`, one set of weights) that turns text a into `u`
    and text b into `v`; the head reads `[u, v, |u - v|, u * v]`.

    Example:
    ```python
    config = ModelConfig(kind="adapter_pooler", num_labels=2, max_seq_len=128)
    model = build_model(config)
    logits = model({"activations": acts_f16, "padding_mask": mask})
    ```
    """
    if isinstance(config, dict):
        config = ModelConfig.from_dict(config)
    config.validate()
    builders = {
        "linear_probe": _linear_probe,
        "scalar_mix": _scalar_mix,
        "adapter_pooler": _adapter_pooler,
        "cnn": _cnn,
    }
    inputs = {
        "activations": keras.Input(
            shape=config.input_shape,
            dtype=config.input_dtype,
            name="activations",
        )
    }
    if config.is_sequence:
        inputs["padding_mask"] = keras.Input(
            shape=(None,) * (2 if config.windows else 1), dtype="int32", name="padding_mask"
        )
    if config.windows:
        inputs["window_mask"] = keras.Input(shape=(None,), dtype="int32", name="window_mask")
    acts = inputs["activations"]
    if config.windows:
        outputs = _head(config, _document_features(config, inputs, builders))
    elif config.kind == "cosine":  # no encoder: the stored pair's cosines, the head set to the baseline
        cosines = PairCosines(name="pair_cosines")(acts)
        last = config.layers[-1] if config.layers is not None else -1
        outputs = CosineResidualHead(config.task_kind, cosine_index=last, name="cosine_head")([cosines, cosines])
    elif config.pair_mode == "separate":
        side = keras.Input(shape=config.input_shape[1:], dtype="float32", name="side")
        encoder = keras.Model(side, _features(config, side, None, builders), name="side_encoder")
        u = encoder(SelectLayer(0, name="text_a")(acts))
        v = encoder(SelectLayer(1, name="text_b")(acts))
        features = PairFeatures(name="pair_features")([u, v])
        if config.pair_cosine:
            outputs = _cosine_head(config, acts, features)
        else:
            outputs = _head(config, features)
    else:
        outputs = _head(config, _features(config, acts, inputs.get("padding_mask"), builders),
                        inputs.get("padding_mask"))
    name = config.name or f"{config.kind}_{config.task_kind}"
    return keras.Model(inputs=inputs, outputs=outputs, name=name)


def _document_features(config, inputs, builders):
    """``windows``: the kind's layers encode every window of every document
    (`window_encoder`, one set of weights, over `[B * W, ...]`), and the
    windows' features are pooled per document over the real windows
    (``window_pooling``): `[B, D]`."""
    window = [keras.Input(shape=config.window_shape, dtype=config.input_dtype, name="window")]
    merged = [MergeWindows(name="merge_windows")(inputs["activations"])]
    if config.is_sequence:
        window.append(keras.Input(shape=(None,), dtype="int32", name="window_padding_mask"))
        merged.append(MergeWindows(name="merge_padding_masks")(inputs["padding_mask"]))
    encoder = keras.Model(window, _features(config, window[0], window[1] if config.is_sequence else None, builders),
                          name="window_encoder")
    per_window = SplitWindows(name="split_windows")([encoder(merged), inputs["window_mask"]])
    pool = WINDOW_POOLING_LAYERS[config.window_pooling](name=f"window_{config.window_pooling}")
    return pool(per_window, padding_mask=inputs["window_mask"])


def _features(config, acts, padding_mask, builders):
    """The kind's layers from the stored stack to the features its head reads."""
    if config.layers is not None and list(config.layers) != list(range(config.num_layers)):
        acts = SelectLayers(list(config.layers), name="select_layers")(acts)
        config = dataclasses.replace(config, num_layers=len(config.layers), layers=None)
    return builders[config.kind](config, acts, padding_mask)


def _head(config, features, padding_mask=None):
    """Dropout + task head; `features` is `[B, D]` (or `[B, T, D]` per token)."""
    if config.dropout > 0:
        features = Dropout(config.dropout, name="dropout")(features)
    if config.task_kind == "span":
        start, end = SpanHead(name="span_head")(features, padding_mask=padding_mask)
        return {"start_logits": start, "end_logits": end}
    if config.task_kind == "token_classification":
        return TaskHead("classification", config.num_labels, name="head")(features)
    return TaskHead(config.task_kind, config.num_labels, name="head")(features)


def _cosine_head(config, acts, features):
    """``pair_cosine``: the per-layer cosines of the stored pair join the
    pair features, and the head starts as the last read layer's cosine
    (`CosineResidualHead`)."""
    cosines = PairCosines(name="pair_cosines")(acts)  # every stored layer's
    features = keras.layers.Concatenate(name="features_and_cosines")([features, cosines])
    if config.dropout > 0:
        features = Dropout(config.dropout, name="dropout")(features)
    last = config.layers[-1] if config.layers is not None else -1
    return CosineResidualHead(config.task_kind, cosine_index=last, name="cosine_head")([features, cosines])


def _pool_tokens(config, x, padding_mask):
    """`[B, T, D]` -> `[B, D]` for `linear_probe` and `scalar_mix`: the masked
    mean, or the first token with ``token_pooling="cls"``."""
    if config.token_pooling == "cls":
        return SelectLayer(0, name="cls_token")(x)
    return MaskedMeanPooling(name="token_mean")(x, padding_mask=padding_mask)


def _linear_probe(config, acts, padding_mask):
    last = SelectLayer(-1, name="last_layer")(acts)
    if config.is_sequence and not config.per_token:
        last = _pool_tokens(config, last, padding_mask)
    return last


def _scalar_mix(config, acts, padding_mask):
    # Mix layers per token first: a reduction over the layer axis is the
    # cheapest full pass over the input; token pooling then reads 1/L of it.
    if config.is_sequence and not config.per_token and config.token_pooling == "cls":
        acts = SelectLayer(0, axis=2, name="cls_token")(acts)  # [B, L, H]: mix only the first token
    mixed = ScalarMix(normalize=config.layer_norm, logit_scale=config.mix_logit_scale, name="scalar_mix")(acts)
    if config.is_sequence and not config.per_token and config.token_pooling != "cls":
        mixed = MaskedMeanPooling(name="token_mean")(mixed, padding_mask=padding_mask)
    return mixed


def _adapter_pooler(config, acts, padding_mask):
    if config.layer_pooling == "concat":
        # The prototype: project every layer (L times the work), concatenate.
        h = NormalizedProjection(
            config.adapter_dim, normalize=config.layer_norm, name="adapter_projection"
        )(acts)
        if config.is_sequence:
            h = LayersToChannels(name="concat_layers")(h)
        else:
            h = keras.layers.Flatten(name="concat_layers")(h)
    else:
        if config.layer_pooling == "scalar_mix":
            mixed = ScalarMix(normalize=config.layer_norm, logit_scale=config.mix_logit_scale, name="scalar_mix")(acts)
        else:
            mixed = LayerAttention(normalize=config.layer_norm, name="layer_attention")(
                acts, padding_mask=padding_mask
            )
        h = keras.layers.Dense(
            config.adapter_dim, activation="gelu", name="adapter_projection"
        )(mixed)
    for i in range(config.transformer_blocks):
        h = TransformerBlock(config.transformer_heads, 2 * config.adapter_dim, dropout=config.dropout,
                             name=f"transformer_block_{i}")(h, padding_mask=padding_mask)
    if config.is_sequence and not config.per_token:
        pooled = [SelectLayer(0, name="cls_token")(h)] if config.token_pooling == "cls" else []
        if config.token_pooling in ("attention_mean", "attention"):
            pooled.append(
                MaskedAttentionPooling(name="token_attention")(h, padding_mask=padding_mask)
            )
        if config.token_pooling in ("attention_mean", "mean"):
            pooled.append(MaskedMeanPooling(name="token_mean")(h, padding_mask=padding_mask))
        h = (
            keras.layers.Concatenate(name="token_pooling")(pooled)
            if len(pooled) > 1
            else pooled[0]
        )
    return h


def _cnn(config, acts, padding_mask):
    h = NormalizedProjection(
        config.cnn_channels, normalize=config.layer_norm, name="channel_projection"
    )(acts)
    if config.is_sequence:
        # [B, L, T, C] -> [B, T, L*C]: a 1-D image over tokens, layers as channels.
        h = LayersToChannels(name="layers_to_channels")(h, padding_mask=padding_mask)
    # Vector input: [B, L, C] is already a 1-D image over layers.
    h = keras.layers.Conv1D(
        config.cnn_filters,
        config.cnn_kernel_size,
        padding="same",
        activation="gelu",
        name="conv",
    )(h)
    if config.per_token:
        return h
    if config.is_sequence:
        mean = MaskedMeanPooling(name="token_mean")(h, padding_mask=padding_mask)
        peak = MaskedMaxPooling(name="token_max")(h, padding_mask=padding_mask)
    else:
        mean = keras.layers.GlobalAveragePooling1D(name="layer_mean")(h)
        peak = keras.layers.GlobalMaxPooling1D(name="layer_max")(h)
    h = keras.layers.Concatenate(name="pooling")([mean, peak])
    return h


def trainable_params(model: keras.Model) -> int:
    """Number of trainable parameters (scalars) of `model`."""
    return int(sum(math.prod(w.shape) for w in model.trainable_weights))


def layer_weights(model: keras.Model, batches=None) -> list[float] | None:
    """The learned softmax layer weights of a model's layer mix, or None.

    `ScalarMix` (kind `scalar_mix`, `adapter_pooler`'s default layer
    pooling): its weights. `LayerAttention` (``layer_pooling="attention"``)
    weighs each example differently: the mean of its weights over
    `batches` (an iterable of the model's feature dicts, e.g. a dev split);
    None without `batches`. ``layer_pooling="concat"`` and `cnn` have no
    mix: None.
    """
    for layer in model.layers:
        if isinstance(layer, ScalarMix):
            return [float(w) for w in layer.layer_weights()]
        if isinstance(layer, LayerAttention):
            return None if batches is None else _mean_attention_weights(model, layer, batches)
        if isinstance(layer, keras.Model):  # a pair model's side encoder
            found = layer_weights(layer)
            if found is not None:
                return found
    return None


def _mean_attention_weights(model: keras.Model, layer: LayerAttention, batches) -> list[float] | None:
    """Mean per-example weights of `layer` (a top-level `LayerAttention`) over `batches`."""
    probe = keras.Model(model.input, layer.input)
    total, count = None, 0
    for features in batches:
        inputs = probe(features, training=False)
        acts, mask = (inputs if isinstance(inputs, (list, tuple)) else (inputs, None))
        weights = layer.layer_weights(acts, mask)
        total = weights.sum(axis=0) if total is None else total + weights.sum(axis=0)
        count += weights.shape[0]
    return None if not count else [float(w) for w in total / count]
