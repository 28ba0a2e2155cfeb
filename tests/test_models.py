import os

os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402

from bertvision.models import (  # noqa: E402
    Dropout,
    KINDS,
    ModelConfig,
    ScalarMix,
    build_model,
    layer_weights,
    trainable_params,
)

L, T, H = 3, 12, 32


def small_config(kind, task_kind="classification", tokens=T, **kw):
    return ModelConfig(
        kind=kind,
        task_kind=task_kind,
        num_labels=1 if task_kind == "regression" else 3,
        num_layers=L,
        hidden=H,
        max_seq_len=tokens,
        adapter_dim=16,
        cnn_channels=4,
        cnn_filters=8,
        dropout=0.0,
        **kw,
    )


def make_inputs(config, n=64, seed=0, dtype="float16"):
    rng = np.random.default_rng(seed)
    lead = len(config.sides)  # a separately encoded pair's [2] axis
    trailing = len(config.activations_shape) - 1 - lead
    scales = np.array([0.5, 2.0, 5.0])[:L].reshape((1,) * (1 + lead) + (L,) + (1,) * trailing)
    acts = rng.standard_normal((n,) + config.activations_shape) * scales
    x = {"activations": acts.astype(dtype)}
    if config.is_sequence:
        lengths = rng.integers(3, T + 1, size=n)
        mask = (np.arange(T)[None] < lengths[:, None]).astype("int32")
        x["padding_mask"] = mask
    return x


def learnable_targets(config, x, seed=1):
    """Labels from a fixed linear rule of the (masked) mean activations."""
    acts = x["activations"].astype("float32")
    if config.is_sequence:
        m = x["padding_mask"][:, None, :, None].astype("float32")
        acts = (acts * m).sum(2) / m.sum(2)
    feats = (acts / acts.std(axis=(0, 2), keepdims=True)).mean(1)  # [n, H]
    w = np.random.default_rng(seed).standard_normal((H, 3))
    scores = feats @ w
    if config.task_kind == "regression":
        return scores[:, 0].astype("float32")
    return scores.argmax(-1).astype("int32")


def loss_for(config):
    if config.task_kind == "regression":
        return keras.losses.MeanSquaredError()
    return keras.losses.SparseCategoricalCrossentropy(from_logits=True)


@pytest.mark.parametrize("tokens", [None, T], ids=["vector", "sequence"])
@pytest.mark.parametrize("task_kind", ["classification", "regression"])
@pytest.mark.parametrize("kind", KINDS)
def test_shapes_and_loss_goes_down(kind, task_kind, tokens):
    keras.utils.set_random_seed(0)
    config = small_config(kind, task_kind, tokens)
    model = build_model(config)
    x = make_inputs(config)
    y = learnable_targets(config, x)
    out = model(x)
    expected = (64,) if task_kind == "regression" else (64, 3)
    assert tuple(out.shape) == expected
    assert out.dtype == "float32"
    assert 0 < trainable_params(model) < 50_000
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss=loss_for(config))
    before = model.evaluate(x, y, verbose=0)
    model.fit(x, y, batch_size=32, epochs=15, verbose=0)
    after = model.evaluate(x, y, verbose=0)
    assert after < 0.8 * before, (before, after)


@pytest.mark.parametrize("kind", KINDS)
def test_span_outputs_masked(kind):
    keras.utils.set_random_seed(0)
    config = small_config(kind, "span")
    model = build_model(config)
    x = make_inputs(config, n=8)
    x["padding_mask"][:, 0] = 0  # even if CLS were marked padding, it stays valid
    out = model(x)
    assert set(out) == {"start_logits", "end_logits"}
    for logits in out.values():
        logits = np.asarray(logits)
        assert logits.shape == (8, T)
        pad = x["padding_mask"] == 0
        pad[:, 0] = False
        assert np.all(logits[pad] < -1e8)
        assert np.all(np.abs(logits[~pad]) < 1e3)
    # Span loss goes down (start/end at real positions).
    lengths = x["padding_mask"].sum(1)
    start = (lengths // 3).astype("int32")
    end = (lengths // 2).astype("int32")

    ce = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    opt = keras.optimizers.Adam(1e-2)

    def loss_value():
        o = model(x, training=True)
        return ce(start, o["start_logits"]) + ce(end, o["end_logits"])

    before = float(loss_value())
    for _ in range(30):
        with tf.GradientTape() as tape:
            loss = loss_value()
        grads = tape.gradient(loss, model.trainable_weights)
        opt.apply_gradients(zip(grads, model.trainable_weights))
    assert float(loss_value()) < 0.7 * before


@pytest.mark.parametrize("kind", KINDS)
def test_token_classification_learns_each_token_and_ignores_masked_ones(kind, tmp_path):
    """A class per token, read off that token's own activations; positions
    labelled -1 (later sub-words, padding) add no loss and reload identically."""
    keras.utils.set_random_seed(0)
    config = small_config(kind, "token_classification")
    model = build_model(config)
    x = make_inputs(config, n=48)
    w = np.random.default_rng(3).standard_normal((H, 3))
    y = (x["activations"].astype("float32")[:, -1] @ w).argmax(-1).astype("int32")  # [n, T] from the last layer
    y[x["padding_mask"] == 0] = -1
    y[:, 1::3] = -1  # "later sub-words"
    assert tuple(model(x).shape) == (48, T, 3)
    from bertvision.training.trainer import task_losses

    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss=task_losses("token_classification")[0])
    before = model.evaluate(x, y, verbose=0)
    model.fit(x, y, batch_size=16, epochs=15, verbose=0)
    after = model.evaluate(x, y, verbose=0)
    assert after < 0.8 * before, (before, after)
    logits = np.asarray(model(x), dtype="float64")
    log_p = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    kept = y != -1
    expected = -np.take_along_axis(log_p, np.maximum(y, 0)[..., None], -1)[..., 0][kept].mean()
    loss = task_losses("token_classification")[0]
    assert float(loss(y, model(x))) == pytest.approx(expected, rel=1e-4)  # the mean over labelled tokens only
    path = tmp_path / "token.keras"
    model.save(path)
    np.testing.assert_array_equal(np.asarray(model(x)), np.asarray(keras.saving.load_model(path)(x)))


def test_span_on_vector_config_raises():
    with pytest.raises(ValueError, match="sequence"):
        ModelConfig(kind="adapter_pooler", task_kind="span", max_seq_len=None)


def test_config_validation():
    with pytest.raises(ValueError, match="kind"):
        ModelConfig(kind="transformer")
    with pytest.raises(ValueError, match="num_labels"):
        ModelConfig(task_kind="regression", num_labels=2)
    with pytest.raises(ValueError, match="unknown"):
        ModelConfig.from_dict({"kind": "cnn", "colour": "red"})


@pytest.mark.parametrize("kind", KINDS)
def test_json_round_trip_builds_same_model(kind):
    config = small_config(kind, tokens=T, layer_pooling="attention")
    again = ModelConfig.from_json(config.to_json())
    assert again == config
    a, b = build_model(config), build_model(again)
    assert trainable_params(a) == trainable_params(b)
    assert [w.shape for w in a.weights] == [w.shape for w in b.weights]
    b.set_weights(a.get_weights())
    x = make_inputs(config, n=4)
    np.testing.assert_allclose(a(x), b(x), rtol=1e-6)


@pytest.mark.parametrize(
    "kind,tokens,task_kind,pooling",
    [
        ("adapter_pooler", T, "classification", "scalar_mix"),
        ("adapter_pooler", T, "span", "attention"),
        ("adapter_pooler", None, "regression", "concat"),
        ("cnn", T, "classification", "scalar_mix"),
        ("scalar_mix", None, "classification", "scalar_mix"),
        ("linear_probe", T, "regression", "scalar_mix"),
    ],
)
def test_keras_save_load_identical(tmp_path, kind, tokens, task_kind, pooling):
    keras.utils.set_random_seed(0)
    config = small_config(kind, task_kind, tokens, layer_pooling=pooling)
    model = build_model(config)
    x = make_inputs(config, n=8)
    # Move weights away from their initial values.
    model.set_weights([w + 0.01 * np.random.default_rng(i).standard_normal(w.shape)
                       for i, w in enumerate(model.get_weights())])
    path = tmp_path / "model.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    for a, b in zip(keras.tree.flatten(model(x)), keras.tree.flatten(loaded(x))):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


@pytest.mark.parametrize("kind", KINDS)
def test_separate_pairs_share_one_side_encoder(kind, tmp_path):
    """pair_mode='separate': one set of side weights encodes both texts; the
    head reads [u, v, |u - v|, u * v]; save/load is exact."""
    keras.utils.set_random_seed(0)
    config = small_config(kind, tokens=None, pair_mode="separate")
    assert config.input_shape == (2, L, H)
    model = build_model(config)
    side = model.get_layer("side_encoder")
    single = build_model(small_config(kind, tokens=None))
    head = model.get_layer("head")
    # the side encoder is the one-text model without its head; the head reads 4 times its features
    assert trainable_params(side) == trainable_params(single) - trainable_params(single.get_layer("head"))
    assert head.dense.kernel.shape[0] == 4 * single.get_layer("head").dense.kernel.shape[0]
    x = make_inputs(config, n=8)
    assert x["activations"].shape == (8, 2, L, H)
    a, b = x["activations"][:, 0:1], x["activations"][:, 1:2]
    u, v = np.asarray(side(a[:, 0].astype("float32"))), np.asarray(side(b[:, 0].astype("float32")))
    features = keras.Model(model.inputs, model.get_layer("pair_features").output)
    np.testing.assert_allclose(np.asarray(features(x)), np.concatenate([u, v, np.abs(u - v), u * v], -1),
                               rtol=1e-5, atol=1e-5)
    swapped = {"activations": np.concatenate([b, a], axis=1)}
    assert not np.allclose(np.asarray(model(x)), np.asarray(model(swapped)))  # the head sees which text is which
    model.save(tmp_path / "m.keras")
    loaded = keras.saving.load_model(tmp_path / "m.keras")
    np.testing.assert_array_equal(np.asarray(model(x)), np.asarray(loaded(x)))
    if kind == "scalar_mix":
        assert layer_weights(loaded) is not None  # found inside the side encoder


def test_separate_pairs_need_vector_input():
    with pytest.raises(Exception, match="pair_mode='separate'"):
        small_config("cnn", tokens=T, pair_mode="separate").validate()
    with pytest.raises(Exception, match="pair-mode must be one of cross, separate"):
        small_config("cnn", tokens=None, pair_mode="siamese").validate()


@pytest.mark.parametrize("tokens", [None, T])
def test_scalar_mix_weights_readable(tokens):
    config = small_config("scalar_mix", tokens=tokens)
    model = build_model(config)
    mix = model.get_layer("scalar_mix")
    assert isinstance(mix, ScalarMix)
    mix.mix_logits.assign([0.0, 0.01, 0.02])
    w = mix.layer_weights()
    assert w.shape == (L,)
    np.testing.assert_allclose(w.sum(), 1.0, rtol=1e-6)
    assert w[2] > w[1] > w[0]
    logits = np.array([0.0, 0.01, 0.02]) * config.mix_logit_scale  # the stored logits times the scale
    np.testing.assert_allclose(w, np.exp(logits) / np.exp(logits).sum(), rtol=1e-5)
    assert layer_weights(model) == pytest.approx(list(w))
    assert layer_weights(build_model(small_config("cnn"))) is None


def test_scalar_mix_normalised_matches_reference():
    """The folded standardisation equals LayerNorm-then-mix."""
    rng = np.random.default_rng(0)
    x = (rng.standard_normal((2, L, 5, H)) * 3 + 1).astype("float32")
    mix = ScalarMix()
    out = np.asarray(mix(x))
    mix.mix_logits.assign(np.array([0.3, -0.2, 0.5]) / mix.logit_scale)  # weights softmax(scale * stored)
    out = np.asarray(mix(x))
    w = np.exp([0.3, -0.2, 0.5]) / np.exp([0.3, -0.2, 0.5]).sum()
    ln = (x - x.mean(-1, keepdims=True)) / np.sqrt(x.var(-1, keepdims=True) + 1e-6)
    ref = (ln * w[None, :, None, None]).sum(1)
    np.testing.assert_allclose(out, ref, atol=1e-4)


@pytest.mark.parametrize("dtype", ["float16", "float32"])
def test_input_dtypes_accepted(dtype):
    config = small_config("adapter_pooler", input_dtype="float16")
    model = build_model(config)
    x = make_inputs(config, n=4, dtype=dtype)
    x16 = make_inputs(config, n=4, dtype="float16")
    out = model(x)
    assert out.dtype == "float32"
    np.testing.assert_allclose(out, model(x16), atol=1e-2)
    assert model.inputs[0].dtype == "float16" or model.inputs[1].dtype == "float16"


@pytest.mark.parametrize("kind", ["linear_probe", "scalar_mix", "adapter_pooler", "cnn"])
def test_sequence_models_take_any_token_length(kind):
    """The reader pads each batch to a power-of-two bucket: one model, many lengths."""
    from bertvision.models import ModelConfig, build_model

    for task_kind in ("classification", "span"):
        model = build_model(ModelConfig(kind=kind, task_kind=task_kind, num_layers=3, hidden=16, max_seq_len=64))
        for t in (16, 32, 64):
            acts = np.random.default_rng(t).standard_normal((2, 3, t, 16)).astype("float16")
            mask = np.ones((2, t), "int32")
            mask[1, t // 2:] = 0
            out = model({"activations": acts, "padding_mask": mask})
            if task_kind == "span":
                assert out["start_logits"].shape == (2, t)
            else:
                assert out.shape == (2, 2)


def test_layer_subset_config():
    from bertvision.models import ModelConfig, build_model, layer_weights

    config = ModelConfig(kind="scalar_mix", num_layers=7, hidden=16, layers=[4, 5, 6])
    model = build_model(ModelConfig.from_json(config.to_json()))
    assert model.input["activations"].shape[1] == 7
    assert len(layer_weights(model)) == 3
    for bad in ([], [6, 4], [0, 7], [1, 1]):
        with pytest.raises(ValueError, match="layers"):
            ModelConfig(kind="scalar_mix", num_layers=7, hidden=16, layers=bad)


@pytest.mark.parametrize("jit", [True, False])
def test_dropout_masks_like_keras_and_fast_under_xla(jit):
    """`Dropout` (Philox) keeps ~1-rate of the units, scales them by
    1/(1-rate), draws a new seeded mask every call, and is the identity at
    inference; under XLA it is far faster than `keras.layers.Dropout`."""
    import time

    x = tf.ones((32, 128, 384))
    ours, theirs = Dropout(0.25, seed=3), keras.layers.Dropout(0.25, seed=3)
    step = tf.function(lambda layer, v: layer(v, training=True), jit_compile=jit)
    first, second = np.asarray(step(ours, x)), np.asarray(step(ours, x))
    kept = first != 0
    assert abs(kept.mean() - 0.75) < 0.01
    np.testing.assert_allclose(first[kept], 1 / 0.75, rtol=1e-6)
    assert (kept != (second != 0)).any()  # a fresh mask each step
    again = Dropout(0.25, seed=3)
    np.testing.assert_array_equal(np.asarray(step(again, x)), first)  # seeded
    np.testing.assert_array_equal(np.asarray(ours(x, training=False)), np.asarray(x))
    # exactly Keras' masks: the default algorithm is Philox, only slower to reach under XLA
    np.testing.assert_array_equal(np.asarray(step(Dropout(0.25, seed=3), x)),
                                  np.asarray(step(keras.layers.Dropout(0.25, seed=3), x)))
    channel = Dropout(0.5, noise_shape=(None, 1, None), seed=0)(x, training=True)
    assert (np.asarray(channel)[:, :1] == np.asarray(channel)).all()  # mask shared over axis 1
    if jit:
        def timed(layer):
            step(layer, x)
            t = time.perf_counter()
            for _ in range(3):
                step(layer, x)
            return time.perf_counter() - t

        assert timed(ours) < timed(theirs) / 3


@pytest.mark.parametrize("task_kind", ["classification", "span"])
def test_transformer_blocks_learn_ignore_padding_and_reload(task_kind, tmp_path):
    keras.utils.set_random_seed(0)
    config = small_config("adapter_pooler", task_kind, transformer_blocks=1, transformer_heads=2)
    model = build_model(config)
    plain = build_model(small_config("adapter_pooler", task_kind))
    # one block: attention (4 d^2 + 4 d), feed-forward 2 d wide (4 d^2 + 3 d), two layer norms (4 d)
    d = config.adapter_dim
    assert trainable_params(model) - trainable_params(plain) == 8 * d * d + 11 * d
    x = make_inputs(config)
    # what is under the padding mask does not change any output
    noisy = dict(x, activations=np.where(x["padding_mask"][:, None, :, None] == 1, x["activations"],
                                         np.float16(7.0)))
    for a, b in zip(keras.tree.flatten(model(x)), keras.tree.flatten(model(noisy))):
        if task_kind == "span":  # padded positions are masked to -1e9 in both
            a, b = np.where(x["padding_mask"] == 1, a, 0), np.where(x["padding_mask"] == 1, b, 0)
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-5)
    path = tmp_path / "model.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    for a, b in zip(keras.tree.flatten(model(x)), keras.tree.flatten(loaded(x))):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    if task_kind == "classification":
        y = learnable_targets(config, x)
        model.compile(optimizer=keras.optimizers.Adam(1e-2), loss=loss_for(config))
        before = model.evaluate(x, y, verbose=0)
        model.fit(x, y, batch_size=32, epochs=15, verbose=0)
        assert model.evaluate(x, y, verbose=0) < 0.8 * before


@pytest.mark.parametrize("bad,match", [
    (dict(kind="cnn", transformer_blocks=1), "adapter_pooler"),
    (dict(tokens=None, transformer_blocks=1), "sequence"),
    (dict(transformer_blocks=1, transformer_heads=3), "divide adapter_dim"),
    (dict(transformer_blocks=-1), "--transformer-blocks must be an integer >= 0"),
    (dict(transformer_blocks=1.0), "--transformer-blocks must be an integer >= 0"),
    (dict(transformer_blocks=1, transformer_heads=0), "--transformer-heads"),
])
def test_transformer_blocks_validation(bad, match):
    kind = bad.pop("kind", "adapter_pooler")
    with pytest.raises(ValueError, match=match):
        small_config(kind, **bad)


@pytest.mark.parametrize("kind", ["linear_probe", "scalar_mix", "adapter_pooler", "cnn"])
def test_pair_cosine_head_starts_as_the_zero_shot_cosine(kind, tmp_path):
    """Before training, a ``pair_cosine`` regression head predicts the cosine
    of the two texts' last stored layer exactly (scale 1, offset 0, a zero
    correction); a two-class head set to a threshold decides as the cosine
    baseline does; it saves, reloads and learns."""
    config = ModelConfig(kind=kind, task_kind="regression", num_labels=1, num_layers=L, hidden=H,
                         pair_mode="separate", pair_cosine=True, adapter_dim=16, cnn_channels=4, cnn_filters=8)
    model = build_model(config)
    rng = np.random.default_rng(0)
    acts = rng.standard_normal((32, 2, L, H)).astype("float16")
    acts[:, 1] = (acts[:, 0] + rng.uniform(0.2, 3.0, (32, 1, 1)) * rng.standard_normal((32, L, H))).astype("float16")
    u, v = acts[:, 0, -1].astype("float32"), acts[:, 1, -1].astype("float32")
    cosine = (u * v).sum(1) / np.linalg.norm(u, axis=1) / np.linalg.norm(v, axis=1)
    np.testing.assert_allclose(model({"activations": acts}), cosine, atol=1e-5)
    path = tmp_path / "m.keras"
    model.save(path)
    np.testing.assert_allclose(keras.models.load_model(path)({"activations": acts}), cosine, atol=1e-5)
    # the two-class head as the baseline's decision: cosine >= t -> positive
    two = build_model(ModelConfig(kind=kind, num_labels=2, num_layers=L, hidden=H, pair_mode="separate",
                                  pair_cosine=True, adapter_dim=16, cnn_channels=4, cnn_filters=8))
    threshold = float(np.median(cosine))
    two.get_layer("cosine_head").set_threshold(threshold, positive=1)
    np.testing.assert_array_equal(np.argmax(two({"activations": acts}), axis=1), (cosine >= threshold).astype(int))
    # training moves away from the cosine where the data says so: fit a target the cosine only partly explains
    target = (2.0 * cosine + np.sin(4 * acts[:, 0, 0, 0].astype("float32"))).astype("float32")
    model.compile(optimizer=keras.optimizers.Adam(3e-3), loss="mse")
    before = float(np.mean((model.predict({"activations": acts}, verbose=0) - target) ** 2))
    model.fit({"activations": acts}, target, epochs=30, batch_size=16, verbose=0)
    after = float(np.mean((model.predict({"activations": acts}, verbose=0) - target) ** 2))
    assert after < 0.5 * before


def test_pair_cosine_needs_a_separately_encoded_pair_with_two_classes_or_a_score():
    with pytest.raises(Exception, match="pair_cosine reads the cosine of a separately encoded pair"):
        small_config("scalar_mix", tokens=None, pair_cosine=True).validate()
    with pytest.raises(Exception, match="num_labels=3"):
        small_config("scalar_mix", tokens=None, pair_mode="separate", pair_cosine=True).validate()
