"""Does the layer mix learn? Known-answer tests on synthetic stores.

A store of MiniLM's shape (7 layers x 384, float16, written with the real
store writer) where only some layers carry the label and the others are
noise: every adapter with a learned layer mix (`scalar_mix`, and
`adapter_pooler` with ``layer_pooling`` ``scalar_mix`` or ``attention``)
trained with the default recipe (`FitConfig`'s lr, epochs, batch size,
warm-up, weight decay) must put more than 0.8 of its layer weight on the
carrying layers, as recorded in ``results.json``. The same check fails on a
mix that cannot learn: logits frozen (``mix_logit_scale=0``) or moving at
the head's learning rate as in AllenNLP's `ScalarMix` (``mix_logit_scale=1``,
this project's mix before issue 34), which stayed near uniform.

``layer_pooling="concat"`` has no mix (every layer is projected and
concatenated) and records no layer weights.
"""

import numpy as np
import pytest

LAYERS, HIDDEN = 7, 384
TRAIN, DEV = 1024, 256


def write_known_answer_store(folder, carriers, seed=0, strength=0.5):
    """A vector store whose label is in the layers `carriers` only.

    Every layer of every example is its own fixed mean vector (layers of a
    real BERT differ in their means too) plus standard normal noise; each
    carrying layer adds ``+-strength * sqrt(H) / 4`` along one direction
    (the sign is the label). One carrying layer alone separates the classes
    almost perfectly; the uniform mix of 7 layers does not (about 80%).
    """
    from bertvision.store.format import StoreSpec, write_split

    rng = np.random.default_rng(seed)
    means = rng.standard_normal((LAYERS, HIDDEN))
    direction = rng.standard_normal(HIDDEN)
    direction /= np.linalg.norm(direction)
    spec = StoreSpec(task="sst2", task_kind="classification", label_names=["negative", "positive"],
                     backbone={"name": "synthetic"}, tokenizer="none", layers=list(range(LAYERS)),
                     num_model_layers=LAYERS - 1, hidden=HIDDEN, token_mode="cls", max_seq_len=64,
                     dtype="float16", featurizer={})
    for split, count in (("train", TRAIN), ("dev", DEV)):
        labels = rng.integers(0, 2, count)
        x = means[None] + rng.standard_normal((count, LAYERS, HIDDEN))
        for layer in carriers:
            x[:, layer] += (2 * labels - 1)[:, None] * direction[None] * strength * np.sqrt(HIDDEN) / 4
        write_split(str(folder), spec, split, x.astype("float16"), labels)
    return str(folder)


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    root = tmp_path_factory.mktemp("known_answer")
    return {carriers: write_known_answer_store(root / "-".join(map(str, carriers)), carriers)
            for carriers in ((3,), (2, 5))}


def _weights(store, out, adapter):
    from bertvision.training.fit import FitConfig, fit

    config = FitConfig(store=store, out=str(out), adapter=adapter, verbose=0, jit_compile=False)
    defaults = FitConfig(store="x", out="y")  # the default recipe, apart from the adapter
    assert (config.lr, config.epochs, config.batch_size, config.warmup, config.weight_decay) == \
        (defaults.lr, defaults.epochs, defaults.batch_size, defaults.warmup, defaults.weight_decay)
    results = fit(config)
    assert results.layer_weights is not None and len(results.layer_weights) == LAYERS
    assert sum(results.layer_weights) == pytest.approx(1.0, abs=1e-4)
    return np.asarray(results.layer_weights)


MIXES = [{"kind": "scalar_mix"}, {"kind": "adapter_pooler", "layer_pooling": "scalar_mix"},
         {"kind": "adapter_pooler", "layer_pooling": "attention"}]


@pytest.mark.parametrize("carriers", [(3,), (2, 5)], ids=["one-layer", "two-layers"])
@pytest.mark.parametrize("adapter", MIXES, ids=lambda a: a.get("layer_pooling", a["kind"]) if a["kind"] ==
                         "scalar_mix" else f"pooler-{a['layer_pooling']}")
def test_the_mix_finds_the_layers_that_carry_the_label(adapter, carriers, stores, tmp_path):
    weights = _weights(stores[carriers], tmp_path / "run", adapter)
    share = weights[list(carriers)].sum()
    assert share > 0.8, f"{adapter}: {share:.3f} of the weight on layers {carriers}: {np.round(weights, 3)}"
    if len(carriers) == 2:  # both carrying layers are read, neither is dropped
        assert weights[list(carriers)].min() > 0.2, np.round(weights, 3)


@pytest.mark.parametrize("scale", [0.0, 1.0], ids=["frozen", "allennlp-rate"])
def test_the_check_fails_on_a_mix_that_cannot_learn(scale, stores, tmp_path):
    weights = _weights(stores[(3,)], tmp_path / "run", {"kind": "scalar_mix", "mix_logit_scale": scale})
    assert weights[3] < 0.8, np.round(weights, 3)
    if scale == 0.0:
        np.testing.assert_allclose(weights, 1 / LAYERS, atol=1e-6)


def test_concat_has_no_mix_and_records_no_weights():
    from bertvision.models import ModelConfig, build_model, layer_weights

    assert layer_weights(build_model(ModelConfig(kind="adapter_pooler", layer_pooling="concat"))) is None


def test_a_mix_saved_before_the_logit_scale_loads_at_scale_one():
    from bertvision.models import ScalarMix

    mix = ScalarMix.from_config({"name": "scalar_mix", "normalize": True, "epsilon": 1e-6})
    assert mix.logit_scale == 1.0
    assert ScalarMix.from_config(ScalarMix(logit_scale=7.0).get_config()).logit_scale == 7.0
