"""Keras layers for adapters on stored BERT activations.

Shapes: `L` layers, `T` tokens, `H` hidden, `B` batch. Every layer casts its
input to float32 first (stores hold float16/bfloat16). The layers are written
so that the cheap reductions (over layers, over `hidden` for statistics) come
before the expensive dense work, and so that no per-layer Python loops appear
in the graph: on CPU the shape of the graph decides the speed.
"""

from __future__ import annotations

import keras
import tensorflow as tf
from keras import ops

from bertvision.models.config import MIX_LOGIT_SCALE

NEG_INF = -1e9


def _f32(x):
    return ops.cast(x, "float32")


def _standardize_stats(x, epsilon):
    """Mean and reciprocal std over the last axis (keepdims), float32.

    The sums over `hidden` are written as products with a ones vector: XLA on
    CPU runs those as fast dot kernels, while a plain minor-axis reduction
    is an order of magnitude slower.
    """
    ones = ops.ones((x.shape[-1], 1), dtype=x.dtype)
    inv_n = 1.0 / x.shape[-1]
    mean = ops.matmul(x, ones) * inv_n
    mean_sq = ops.matmul(ops.square(x), ones) * inv_n
    var = ops.maximum(mean_sq - ops.square(mean), 0.0)
    return mean, ops.rsqrt(var + epsilon)


class _ActivationsLayer(keras.layers.Layer):
    """Base for layers reading stored activations: no autocast on entry.

    Keras would otherwise cast the whole float16 input to float32 before
    `call`; these layers cast after their first reduction where they can.
    """

    def __init__(self, **kwargs):
        kwargs.setdefault("autocast", False)
        super().__init__(**kwargs)


def _expand_mask(mask, rank):
    """`[B, T]` mask -> float32 broadcastable against `[B, (L,) T, D]`."""
    mask = _f32(mask)
    mask = ops.expand_dims(mask, -1)
    if rank == 4:
        mask = ops.expand_dims(mask, 1)
    return mask


def _mix(x, weights, normalize, epsilon):
    """Weighted sum over axis 1 of `x` `[B, L, ..., H]`.

    `weights` is `[L]` or `[B, L]`. With `normalize`, each vector is first
    standardised over `H`; the standardisation is folded into the mixing
    coefficients (`sum_l w_l r_l (x_l - m_l)` = `sum_l c_l x_l - sum_l c_l m_l`
    with `c_l = w_l r_l`), so no normalised copy of the big input is made.
    """
    trailing = (1,) * (len(x.shape) - 2)
    if len(weights.shape) == 1:
        w = ops.reshape(weights, (1, -1) + trailing)
    else:
        w = ops.reshape(weights, (-1, weights.shape[1]) + trailing)
    if not normalize:
        return ops.sum(x * w, axis=1)
    mean, rstd = _standardize_stats(x, epsilon)
    coef = w * rstd
    return ops.sum(x * coef, axis=1) - ops.sum(coef * mean, axis=1)


@keras.saving.register_keras_serializable(package="bertvision")
class ScalarMix(_ActivationsLayer):
    """Softmax-weighted sum of layers times a learned scalar (ELMo, Tenney).

    Input `[B, L, ..., H]` (any dtype), output `[B, ..., H]` float32:
    `gamma * sum_l softmax(s)_l * norm(x_l)`. `norm` standardises each vector
    over `H` when `normalize=True` (a LayerNorm without its affine part; any
    affine part is absorbed by the dense layer that follows).

    The weights are `softmax(logit_scale * s)`: under Adam a step moves
    each stored `s` by about the learning rate whatever its gradient's size,
    so `logit_scale` multiplies the mix's learning rate by that factor
    without a second optimizer. At 1.0 (AllenNLP's `ScalarMix`) an adapter's
    few hundred steps at 1e-3 move the logits by a few tenths at most, and a
    mix whose answer is one layer stayed near uniform
    (tests/test_layer_mix.py); the default 100 lets it reach that layer
    within the default recipe.

    Args:
        normalize: bool. Standardise each layer's vectors before mixing.
        epsilon: float. Variance epsilon of the standardisation.
        logit_scale: float. Multiplier of the stored logits (see above).

    Example:
    ```python
    mix = ScalarMix()
    y = mix(np.random.rand(4, 7, 384).astype("float16"))  # [4, 384]
    mix.layer_weights()  # numpy [7], sums to 1
    ```
    """

    def __init__(self, normalize=True, epsilon=1e-6, logit_scale=MIX_LOGIT_SCALE, **kwargs):
        super().__init__(**kwargs)
        self.normalize = normalize
        self.epsilon = epsilon
        self.logit_scale = float(logit_scale)

    @classmethod
    def from_config(cls, config):
        # a mix saved before logit_scale existed multiplied its logits by 1
        return cls(**{"logit_scale": 1.0, **config})

    def build(self, input_shape):
        num_layers = input_shape[1]
        self.mix_logits = self.add_weight(
            name="mix_logits", shape=(num_layers,), initializer="zeros"
        )
        self.gamma = self.add_weight(name="gamma", shape=(), initializer="ones")

    def call(self, inputs):
        x = _f32(inputs)
        weights = ops.softmax(self.mix_logits * self.logit_scale)
        return self.gamma * _mix(x, weights, self.normalize, self.epsilon)

    def layer_weights(self):
        """The softmax layer weights as a numpy array (sums to 1)."""
        return ops.convert_to_numpy(ops.softmax(self.mix_logits * self.logit_scale))

    def compute_output_shape(self, input_shape):
        return (input_shape[0],) + tuple(input_shape[2:])

    def get_config(self):
        config = super().get_config()
        config.update({"normalize": self.normalize, "epsilon": self.epsilon, "logit_scale": self.logit_scale})
        return config


@keras.saving.register_keras_serializable(package="bertvision")
class LayerAttention(_ActivationsLayer):
    """Per-example softmax weights over layers, then a (normalised) mix.

    The score of layer `l` is `q . norm(summary_l)`, where `summary_l` is the
    layer's vector (vector input) or its masked token mean (sequence input).
    Only the summaries (`[B, L, H]`) are scored, so the cost is one pass over
    the input for the summary and one for the mix.

    Call with `x` `[B, L, H]` or `[B, L, T, H]` and, for sequence input,
    `padding_mask` `[B, T]`. Output `[B, H]` or `[B, T, H]`, float32.

    Example:
    ```python
    attn = LayerAttention()
    y = attn(np.random.rand(4, 7, 384).astype("float32"))  # [4, 384]
    ```
    """

    def __init__(self, normalize=True, epsilon=1e-6, **kwargs):
        super().__init__(**kwargs)
        self.normalize = normalize
        self.epsilon = epsilon

    def build(self, input_shape):
        hidden = input_shape[-1]
        self.query = self.add_weight(
            name="query", shape=(hidden,), initializer="zeros"
        )

    def call(self, inputs, padding_mask=None):
        x = _f32(inputs)
        return _mix(x, self._weights(x, padding_mask), self.normalize, self.epsilon)

    def _weights(self, x, padding_mask):
        summary = masked_mean(x, padding_mask) if len(x.shape) == 4 else x
        if self.normalize:
            mean, rstd = _standardize_stats(summary, self.epsilon)
            summary = (summary - mean) * rstd
        scores = ops.einsum("blh,h->bl", summary, self.query)
        return ops.softmax(scores, axis=-1)

    def layer_weights(self, inputs, padding_mask=None):
        """Each example's softmax layer weights, numpy `[B, L]` (rows sum to 1)."""
        return ops.convert_to_numpy(self._weights(_f32(inputs), padding_mask))

    def compute_output_shape(self, inputs_shape, padding_mask_shape=None):
        return (inputs_shape[0],) + tuple(inputs_shape[2:])

    def get_config(self):
        config = super().get_config()
        config.update({"normalize": self.normalize, "epsilon": self.epsilon})
        return config


def masked_mean(x, padding_mask, axis=None):
    """Masked mean of `x` (`[B, T, D]` or `[B, L, T, D]`) over the token axis.

    Written as a batched `[1, T] x [T, D]` matmul (fast on CPU, no transpose).
    """
    mask = _f32(padding_mask)
    count = ops.maximum(ops.sum(mask, axis=-1), 1.0)  # [B]
    if len(x.shape) == 4:
        total = ops.matmul(mask[:, None, None, :], x)[:, :, 0, :]
        return total / count[:, None, None]
    total = ops.matmul(mask[:, None, :], x)[:, 0, :]
    return total / count[:, None]


@keras.saving.register_keras_serializable(package="bertvision")
class MaskedMeanPooling(_ActivationsLayer):
    """Mean over tokens of the real (mask = 1) tokens.

    Call with `x` `[B, T, D]` or `[B, L, T, D]` and `padding_mask` `[B, T]`;
    returns `[B, D]` or `[B, L, D]` float32.

    Example:
    ```python
    pool = MaskedMeanPooling()
    y = pool(np.ones((2, 5, 8)), padding_mask=np.array([[1, 1, 0, 0, 0]] * 2))
    ```
    """

    def call(self, inputs, padding_mask):
        x = _f32(inputs)
        return masked_mean(x, padding_mask)

    def compute_output_shape(self, inputs_shape, padding_mask_shape=None):
        return tuple(inputs_shape[:-2]) + (inputs_shape[-1],)


@keras.saving.register_keras_serializable(package="bertvision")
class MaskedMaxPooling(_ActivationsLayer):
    """Max over tokens of the real tokens. `[B, T, D]` -> `[B, D]`.

    Example:
    ```python
    pool = MaskedMaxPooling()
    y = pool(np.ones((2, 5, 8)), padding_mask=np.array([[1, 1, 0, 0, 0]] * 2))
    ```
    """

    def call(self, inputs, padding_mask):
        x = _f32(inputs)
        mask = _expand_mask(padding_mask, len(x.shape))
        return ops.max(x + (1.0 - mask) * NEG_INF, axis=len(x.shape) - 2)

    def compute_output_shape(self, inputs_shape, padding_mask_shape=None):
        return tuple(inputs_shape[:-2]) + (inputs_shape[-1],)


@keras.saving.register_keras_serializable(package="bertvision")
class MaskedAttentionPooling(_ActivationsLayer):
    """Attention pooling over tokens with a learned query; padding excluded.

    `softmax_t(x_t . q + (1 - mask_t) * -1e9)` weights the tokens.
    Call with `x` `[B, T, D]` and `padding_mask` `[B, T]`; returns `[B, D]`.

    Example:
    ```python
    pool = MaskedAttentionPooling()
    y = pool(np.ones((2, 5, 8)), padding_mask=np.array([[1, 1, 0, 0, 0]] * 2))
    ```
    """

    def build(self, input_shape):
        self.query = self.add_weight(
            name="query", shape=(input_shape[-1],), initializer="zeros"
        )

    def call(self, inputs, padding_mask):
        x = _f32(inputs)
        mask = _f32(padding_mask)
        scores = ops.einsum("btd,d->bt", x, self.query)
        scores = scores + (1.0 - mask) * NEG_INF
        weights = ops.softmax(scores, axis=-1)
        return ops.einsum("btd,bt->bd", x, weights)

    def compute_output_shape(self, inputs_shape, padding_mask_shape=None):
        return (inputs_shape[0], inputs_shape[-1])


@keras.saving.register_keras_serializable(package="bertvision")
class NormalizedProjection(_ActivationsLayer):
    """Shared dense projection of standardised vectors: `act(norm(x) W + b)`.

    Applied to the last axis of `[B, ..., H]` (e.g. every layer and token of
    `[B, L, T, H]` with one shared kernel). The standardisation (LayerNorm
    without affine) is computed in the projected space:
    `norm(x) W = rstd * (x W - mean * sum_h W)`, so the big input is read once
    for the matmul and once for its statistics, and no normalised copy exists.

    Args:
        units: int. Output width.
        activation: activation name (default `"gelu"`).
        normalize: bool. Standardise over `H` first.
        epsilon: float.

    Example:
    ```python
    proj = NormalizedProjection(16)
    y = proj(np.random.rand(2, 7, 128, 384).astype("float16"))  # [2, 7, 128, 16]
    ```
    """

    def __init__(self, units, activation="gelu", normalize=True, epsilon=1e-6, **kwargs):
        super().__init__(**kwargs)
        self.units = units
        self.activation = keras.activations.get(activation)
        self.normalize = normalize
        self.epsilon = epsilon

    def build(self, input_shape):
        self.kernel = self.add_weight(
            name="kernel",
            shape=(input_shape[-1], self.units),
            initializer="glorot_uniform",
        )
        self.bias = self.add_weight(name="bias", shape=(self.units,), initializer="zeros")

    def call(self, inputs):
        x = _f32(inputs)
        y = ops.matmul(x, self.kernel)
        if self.normalize:
            mean, rstd = _standardize_stats(x, self.epsilon)
            y = (y - mean * ops.sum(self.kernel, axis=0)) * rstd
        return self.activation(y + self.bias)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (self.units,)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "units": self.units,
                "activation": keras.activations.serialize(self.activation),
                "normalize": self.normalize,
                "epsilon": self.epsilon,
            }
        )
        return config


@keras.saving.register_keras_serializable(package="bertvision")
class SelectLayer(_ActivationsLayer):
    """Pick one entry of an axis, as float32: a stored layer (axis 1 of
    `[B, L, ...]`) or a token (axis 2 of `[B, L, T, H]`, axis 1 of `[B, T, D]`).

    Example:
    ```python
    last = SelectLayer(-1)(np.zeros((2, 7, 384), "float16"))  # [2, 384]
    cls = SelectLayer(0, axis=2)(np.zeros((2, 7, 32, 384), "float16"))  # [2, 7, 384]
    ```
    """

    def __init__(self, index=-1, axis=1, **kwargs):
        super().__init__(**kwargs)
        self.index = index
        self.axis = axis

    def call(self, inputs):
        return _f32(ops.take(inputs, self.index, axis=self.axis))

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:self.axis]) + tuple(input_shape[self.axis + 1:])

    def get_config(self):
        config = super().get_config()
        config.update({"index": self.index, "axis": self.axis})
        return config


@keras.saving.register_keras_serializable(package="bertvision")
class LayersToChannels(_ActivationsLayer):
    """`[B, L, T, C]` -> `[B, T, L * C]`, padding tokens zeroed.

    Turns the layers of a sequence store into channels of a 1-D "image" over
    tokens, for convolution over tokens.

    Example:
    ```python
    y = LayersToChannels()(np.ones((2, 7, 5, 4)), padding_mask=np.ones((2, 5)))
    ```
    """

    def call(self, inputs, padding_mask=None):
        x = _f32(inputs)
        _, layers, _, channels = x.shape
        x = ops.transpose(x, (0, 2, 1, 3))
        shape = ops.shape(x)
        x = ops.reshape(x, (shape[0], shape[1], layers * channels))
        if padding_mask is not None:
            x = x * _expand_mask(padding_mask, 3)
        return x

    def compute_output_shape(self, inputs_shape, padding_mask_shape=None):
        b, layers, tokens, channels = inputs_shape
        return (b, tokens, layers * channels)


@keras.saving.register_keras_serializable(package="bertvision")
class Dropout(keras.layers.Dropout):
    """`keras.layers.Dropout` that names its random-number algorithm.

    Keras draws a dropout mask with `tf.random.stateless_uniform`'s default
    algorithm from a seed kept in a variable. Under XLA on CPU that
    combination runs far slower than naming the algorithm: a linear probe
    with a span head over 384 tokens (dropout on `[32, 384, 384]`) trains at
    12 instead of 226 examples/s (`experiments/profile_adapters.py --task-kind span
    --tokens 384 --dropout bertvision keras`, docs/benchmarks.md). This layer
    names Philox, the algorithm the default resolves to, so it draws exactly
    Keras' masks (same rate, noise shape and `SeedGenerator` seeds; the
    tests check the masks are equal), only faster. Other backends use Keras'
    own.

    Example:
    ```python
    drop = Dropout(0.1, seed=0)
    y = drop(np.ones((2, 8), "float32"), training=True)
    ```
    """

    def call(self, inputs, training=False):
        if not training or self.rate <= 0 or keras.backend.backend() != "tensorflow":
            return super().call(inputs, training=training)
        shape = tf.shape(inputs)
        if self.noise_shape is not None:
            shape = tf.stack([shape[i] if d is None else d for i, d in enumerate(self.noise_shape)])
        seed = tf.cast(self.seed_generator.next(), tf.int32)
        keep = tf.random.stateless_uniform(shape, seed=seed, alg="philox") >= self.rate
        scale = tf.cast(1.0 / (1.0 - self.rate), inputs.dtype)
        return tf.where(keep, inputs * scale, tf.zeros_like(inputs))


@keras.saving.register_keras_serializable(package="bertvision")
class TransformerBlock(keras.layers.Layer):
    """One post-norm transformer encoder block over tokens, laid out as
    keras-hub's `TransformerEncoder` with its defaults: self-attention
    (padding keys masked) -> dropout -> residual -> LayerNorm -> ReLU
    feed-forward -> dropout -> residual -> LayerNorm.

    Built from Keras' `MultiHeadAttention`, `Dense` and `LayerNormalization`
    with BERTVision's `Dropout`: keras-hub's block uses Keras' dropout, which
    under XLA on CPU made a one-block adapter train several times slower
    than with dropout off (see `Dropout`). No dropout on the attention
    probabilities. `experiments/profile_adapters.py --variants adapter_pooler
    adapter_pooler:transformer_blocks=1 --inputs sequence --tokens 64`
    measures the block's cost beside the plain adapter.

    Args:
        num_heads: int. Attention heads; must divide the input width.
        intermediate_dim: int. Width of the feed-forward layer.
        dropout: float. Dropout rate after attention and after the
            feed-forward layer.
        epsilon: float. LayerNorm epsilon.

    Call with `x` `[B, T, D]` and optional `padding_mask` `[B, T]` (1 = real
    token); output `[B, T, D]` float32.

    Example:
    ```python
    block = TransformerBlock(num_heads=4, intermediate_dim=128)
    y = block(np.random.rand(2, 16, 64).astype("float32"), padding_mask=np.ones((2, 16), "int32"))
    ```
    """

    def __init__(self, num_heads, intermediate_dim, dropout=0.0, epsilon=1e-5, **kwargs):
        super().__init__(**kwargs)
        self.num_heads, self.intermediate_dim = int(num_heads), int(intermediate_dim)
        self.dropout, self.epsilon = float(dropout), float(epsilon)

    def build(self, input_shape):
        width = input_shape[-1]
        if width % self.num_heads:
            raise ValueError(f"TransformerBlock: num_heads ({self.num_heads}) must divide the width ({width})")
        self.attention = keras.layers.MultiHeadAttention(self.num_heads, width // self.num_heads, name="attention")
        self.attention.build(input_shape, input_shape)
        self.attention_norm = keras.layers.LayerNormalization(epsilon=self.epsilon, name="attention_norm")
        self.attention_norm.build(input_shape)
        self.ffn_inner = keras.layers.Dense(self.intermediate_dim, activation="relu", name="ffn_inner")
        self.ffn_inner.build(input_shape)
        self.ffn_outer = keras.layers.Dense(width, name="ffn_outer")
        self.ffn_outer.build(tuple(input_shape[:-1]) + (self.intermediate_dim,))
        self.ffn_norm = keras.layers.LayerNormalization(epsilon=self.epsilon, name="ffn_norm")
        self.ffn_norm.build(input_shape)
        self.attention_dropout = Dropout(self.dropout, name="attention_dropout")
        self.ffn_dropout = Dropout(self.dropout, name="ffn_dropout")

    def call(self, x, padding_mask=None, training=None):
        x = _f32(x)
        mask = None if padding_mask is None else ops.expand_dims(ops.cast(padding_mask, "bool"), 1)  # [B, 1, T]
        h = self.attention(x, x, attention_mask=mask, training=training)
        x = self.attention_norm(x + self.attention_dropout(h, training=training))
        h = self.ffn_outer(self.ffn_inner(x))
        return self.ffn_norm(x + self.ffn_dropout(h, training=training))

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update({"num_heads": self.num_heads, "intermediate_dim": self.intermediate_dim,
                       "dropout": self.dropout, "epsilon": self.epsilon})
        return config


@keras.saving.register_keras_serializable(package="bertvision")
class TaskHead(keras.layers.Layer):
    """Dense output: logits `[B, num_labels]` (classification; multi-label: one
    independent logit per label, for a sigmoid) or, for regression, a score `[B]`
    (over per-token features `[B, T, D]`: `[B, T, num_labels]`, a class per token).

    Example:
    ```python
    head = TaskHead("regression", 1)
    score = head(np.zeros((4, 64), "float32"))  # [4]
    ```
    """

    def __init__(self, task_kind="classification", num_labels=2, kernel_initializer="glorot_uniform", **kwargs):
        super().__init__(**kwargs)
        if task_kind not in ("classification", "multi_label", "regression"):
            raise ValueError(f"TaskHead: unsupported task_kind {task_kind!r}")
        self.task_kind = task_kind
        self.num_labels = num_labels
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        units = 1 if task_kind == "regression" else num_labels
        self.dense = keras.layers.Dense(units, kernel_initializer=self.kernel_initializer, name="dense")

    def build(self, input_shape):
        self.dense.build(input_shape)

    def call(self, inputs):
        out = self.dense(_f32(inputs))
        if self.task_kind == "regression":
            out = ops.squeeze(out, axis=-1)
        return out

    def compute_output_shape(self, input_shape):
        if self.task_kind == "regression":
            return tuple(input_shape[:-1])
        return (*input_shape[:-1], self.num_labels)

    def get_config(self):
        config = super().get_config()
        config.update({"task_kind": self.task_kind, "num_labels": self.num_labels,
                       "kernel_initializer": keras.initializers.serialize(self.kernel_initializer)})
        return config


@keras.saving.register_keras_serializable(package="bertvision")
class SpanHead(keras.layers.Layer):
    """Per-token start/end logits; padding masked to -1e9, CLS (0) kept valid.

    Call with `x` `[B, T, D]` and `padding_mask` `[B, T]`; returns
    `(start_logits, end_logits)`, each `[B, T]` float32.

    Example:
    ```python
    start, end = SpanHead()(np.zeros((2, 5, 8)), padding_mask=np.ones((2, 5)))
    ```
    """

    def __init__(self, kernel_initializer="glorot_uniform", **kwargs):
        super().__init__(**kwargs)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.dense = keras.layers.Dense(2, kernel_initializer=self.kernel_initializer, name="dense")

    def build(self, input_shape):
        self.dense.build(input_shape)

    def call(self, inputs, padding_mask):
        logits = self.dense(_f32(inputs))
        mask = _f32(padding_mask)
        cls = ops.cast(ops.equal(ops.arange(ops.shape(mask)[1]), 0), "float32")  # [T], 1 at 0
        mask = ops.maximum(mask, cls[None, :])
        bias = (1.0 - mask) * NEG_INF
        return logits[..., 0] + bias, logits[..., 1] + bias

    def compute_output_shape(self, inputs_shape, padding_mask_shape=None):
        return (inputs_shape[0], inputs_shape[1]), (inputs_shape[0], inputs_shape[1])

    def get_config(self):
        config = super().get_config()
        config.update({"kernel_initializer": keras.initializers.serialize(self.kernel_initializer)})
        return config


@keras.saving.register_keras_serializable(package="bertvision")
class PairFeatures(keras.layers.Layer):
    """`[u, v]` (each `[B, D]`) -> `[B, 4 D]`: `[u, v, |u - v|, u * v]`, the
    classic way to compare two separately encoded sentences (InferSent,
    Sentence-BERT).

    Example:
    ```python
    y = PairFeatures()([np.ones((2, 8)), np.zeros((2, 8))])  # [2, 32]
    ```
    """

    def call(self, inputs):
        u, v = inputs
        return ops.concatenate([u, v, ops.abs(u - v), u * v], axis=-1)

    def compute_output_shape(self, input_shape):
        (b, d), _ = input_shape
        return (b, None if d is None else 4 * d)


@keras.saving.register_keras_serializable(package="bertvision")
class PairCosines(_ActivationsLayer):
    """Cosine of the two texts of a separately encoded pair at every stored
    layer: `[B, 2, L, H]` -> `[B, L]` float32. What a bi-encoder such as
    all-MiniLM-L6-v2 was trained to put in the angle between `u` and `v`
    (its last layer's cosine is the zero-shot baseline,
    `bertvision.inference.cosine`).

    Example:
    ```python
    cos = PairCosines()(np.random.rand(4, 2, 7, 384).astype("float16"))  # [4, 7]
    ```
    """

    def __init__(self, epsilon=1e-12, **kwargs):
        super().__init__(**kwargs)
        self.epsilon = epsilon

    def call(self, inputs):
        x = _f32(inputs)
        u, v = x[:, 0], x[:, 1]
        dot = ops.sum(u * v, axis=-1)
        norms = ops.sqrt(ops.sum(ops.square(u), axis=-1) * ops.sum(ops.square(v), axis=-1))
        return dot / ops.maximum(norms, self.epsilon)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], input_shape[2])

    def get_config(self):
        config = super().get_config()
        config.update({"epsilon": self.epsilon})
        return config


@keras.saving.register_keras_serializable(package="bertvision")
class CosineResidualHead(keras.layers.Layer):
    """A pair head that starts as the zero-shot cosine and learns a correction.

    Call with `[features, cosines]`: `features` `[B, D]` (the pair features,
    with the per-layer cosines among them) and `cosines` `[B, L]`
    (`PairCosines`). The cosine of layer `cosine_index` goes through a
    trainable affine `scale * cos + offset`; a dense correction of
    `features`, initialised to zero, is added:

    - regression: `scale * cos + offset + dense(features)`, `[B]`;
    - two classes: logits `[0, scale * cos + offset] + dense(features)`.

    Before training the prediction is the cosine itself (regression: scale 1,
    offset 0) or the cosine thresholded at `-offset / scale`, so training
    starts from the baseline and can only move away from it where the data
    says so. `set_threshold(t, positive)` makes the two-class head the
    baseline's decision "cosine >= t -> class `positive`" (`scale`
    `sharpness`, sign by class).

    Example:
    ```python
    head = CosineResidualHead("regression")
    score = head([np.zeros((4, 32), "float32"), np.full((4, 7), 0.5, "float32")])  # [4], all 0.5
    ```
    """

    def __init__(self, task_kind="regression", cosine_index=-1, **kwargs):
        super().__init__(**kwargs)
        if task_kind not in ("classification", "regression"):
            raise ValueError(f"CosineResidualHead: unsupported task_kind {task_kind!r}")
        self.task_kind = task_kind
        self.cosine_index = int(cosine_index)
        units = 1 if task_kind == "regression" else 2
        self.dense = keras.layers.Dense(units, kernel_initializer="zeros", name="correction")

    def build(self, input_shape):
        features_shape, _ = input_shape
        self.dense.build(features_shape)
        self.scale = self.add_weight(name="cosine_scale", shape=(), initializer="ones")
        self.offset = self.add_weight(name="cosine_offset", shape=(), initializer="zeros")

    def call(self, inputs):
        features, cosines = inputs
        cos = ops.take(_f32(cosines), self.cosine_index, axis=1)
        base = self.scale * cos + self.offset  # [B]
        out = self.dense(_f32(features))
        if self.task_kind == "regression":
            return ops.squeeze(out, axis=-1) + base
        return out + ops.stack([ops.zeros_like(base), base], axis=-1)

    def set_threshold(self, threshold: float, positive: int = 1, sharpness: float = 50.0) -> None:
        """Two classes: logits that say "cosine >= threshold -> class `positive`"."""
        sign = 1.0 if positive == 1 else -1.0
        self.scale.assign(sign * sharpness)
        self.offset.assign(-sign * sharpness * threshold)

    def compute_output_shape(self, input_shape):
        features_shape, _ = input_shape
        return (features_shape[0],) if self.task_kind == "regression" else (features_shape[0], 2)

    def get_config(self):
        config = super().get_config()
        config.update({"task_kind": self.task_kind, "cosine_index": self.cosine_index})
        return config


@keras.saving.register_keras_serializable(package="bertvision")
class SelectLayers(_ActivationsLayer):
    """Keep the stored layers at `indices` (axis 1), e.g. the last four.

    Example:
    ```python
    y = SelectLayers([4, 5, 6])(np.zeros((2, 7, 384), "float16"))  # [2, 3, 384]
    ```
    """

    def __init__(self, indices, **kwargs):
        super().__init__(**kwargs)
        self.indices = [int(i) for i in indices]

    def call(self, inputs):
        return ops.take(inputs, self.indices, axis=1)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], len(self.indices)) + tuple(input_shape[2:])

    def get_config(self):
        config = super().get_config()
        config.update({"indices": self.indices})
        return config


@keras.saving.register_keras_serializable(package="bertvision")
class MergeWindows(_ActivationsLayer):
    """A batch of documents' windows as one batch of windows:
    `[B, W, ...]` -> `[B * W, ...]`, so that an adapter encodes every
    window (`SplitWindows` puts its output back per document).

    Example:
    ```python
    y = MergeWindows()(np.zeros((2, 3, 7, 384), "float16"))  # [6, 7, 384]
    ```
    """

    def call(self, inputs):
        shape = ops.shape(inputs)
        return ops.reshape(inputs, (-1,) + tuple(shape[2:]))

    def compute_output_shape(self, input_shape):
        return (None,) + tuple(input_shape[2:])


@keras.saving.register_keras_serializable(package="bertvision")
class SplitWindows(keras.layers.Layer):
    """The inverse of `MergeWindows` for per-window vectors: call with
    `[features [B * W, D], window_mask [B, W]]`; returns `[B, W, D]` with the
    padded windows (mask 0) zeroed, ready for a masked pooling over windows
    (`MaskedMeanPooling`, `MaskedMaxPooling`, `MaskedAttentionPooling` with
    ``padding_mask=window_mask``).

    Example:
    ```python
    y = SplitWindows()([np.ones((6, 64), "float32"), np.array([[1, 1, 0], [1, 0, 0]])])  # [2, 3, 64]
    ```
    """

    def call(self, inputs):
        features, window_mask = inputs
        windows = ops.shape(window_mask)[1]
        x = ops.reshape(_f32(features), (-1, windows, features.shape[-1]))
        return x * _f32(window_mask)[:, :, None]

    def compute_output_shape(self, input_shape):
        features_shape, mask_shape = input_shape
        return (mask_shape[0], mask_shape[1], features_shape[-1])


WINDOW_POOLING_LAYERS = {"mean": MaskedMeanPooling, "max": MaskedMaxPooling, "attention": MaskedAttentionPooling}
"""`ModelConfig.window_pooling` -> the masked pooling layer that pools a document's windows."""
