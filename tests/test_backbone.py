"""The backbone: per-layer outputs pinned against the Hugging Face implementation."""

import json
from pathlib import Path

import numpy as np
import pytest

from bertvision.models.backbone import (AllLayersEncoder, all_layers_model, backbone_identity, backbone_layers, hidden_act,
                                 load_backbone, load_tokenizer, resolve_backbone, save_backbone, sentence_pooling,
                                 set_hidden_act)
from bertvision.errors import BackboneError, ConfigError

REFERENCE = Path(__file__).parent / "fixtures" / "backbone_reference.npz"


@pytest.fixture(scope="module")
def embedded():
    ref = resolve_backbone(None)
    return ref, load_backbone(ref)


def test_per_layer_outputs_match_hugging_face(embedded):
    """tools/make_backbone_reference.sh computed these with transformers' own BERT."""
    _, backbone = embedded
    ref = np.load(REFERENCE)
    inputs = {"token_ids": ref["token_ids"], "segment_ids": ref["segment_ids"], "padding_mask": ref["padding_mask"]}
    ours = all_layers_model(backbone)(inputs).numpy()
    theirs = ref["hidden_states"].astype(np.float32)
    assert ours.shape == theirs.shape == (3, 7, 32, 384)
    diff = np.abs(ours - theirs)
    # every position, padding included (exact GELU as the checkpoint asks; keras-hub's
    # default tanh approximation drifts by ~5e-2 at padding positions)
    assert diff.max() < 1e-2, f"max abs difference {diff.max():.4g} per layer {diff.max(axis=(0, 2, 3))}"
    real = ref["padding_mask"].astype(bool)[:, None, :, None]
    assert (diff * real).max() < 1e-4


def test_embedded_tokenizer_matches_reference_ids(embedded):
    ref_model, _ = embedded
    tokenizer = load_tokenizer(ref_model)
    ref = np.load(REFERENCE)
    ids = tokenizer("BERTVision keeps every layer.", padding="max_length", max_length=32)["input_ids"]
    assert ids == ref["token_ids"][0].tolist()


def test_encoder_token_modes(embedded):
    _, backbone = embedded
    ref = np.load(REFERENCE)
    inputs = {"token_ids": ref["token_ids"], "segment_ids": ref["segment_ids"], "padding_mask": ref["padding_mask"]}
    full = all_layers_model(backbone, [0, 6])(inputs).numpy()
    cls = AllLayersEncoder(backbone, [0, 6], "cls", "float32")(inputs).numpy()
    mean = AllLayersEncoder(backbone, [0, 6], "mean", "float16")(inputs).numpy()
    np.testing.assert_allclose(cls, full[:, :, 0], atol=1e-4)
    mask = ref["padding_mask"][:, None, :, None]
    expected = (full * mask).sum(2) / mask.sum(2)
    assert mean.dtype == np.float16
    np.testing.assert_allclose(mean.astype(np.float32), expected, atol=1e-2, rtol=2e-3)
    with pytest.raises(BackboneError, match="token mode"):
        AllLayersEncoder(backbone, None, "max")


def test_model_identity_hashes_config_and_weights(embedded):
    ref, _ = embedded
    identity = backbone_identity(ref)
    assert identity["name"] == "all-MiniLM-L6-v2" and identity["kind"] == "hf"
    assert len(identity["config_sha256"]) == 64 and len(identity["weights_sha256"]) == 64


@pytest.mark.parametrize("spec,expected", [
    ("all", [0, 1, 2, 3, 4, 5, 6]), (None, [0, 1, 2, 3, 4, 5, 6]), ("last4", [3, 4, 5, 6]),
    ("0,3,6", [0, 3, 6]), ("-1", [6]), ([0, 6], [0, 6]),
])
def test_backbone_layers(spec, expected):
    assert backbone_layers(spec, 6) == expected


@pytest.mark.parametrize("spec,match", [("0,7", "out of range"), ("last9", "1..7"), ("lastx", "lastK"),
                                        ("3,1", "increasing"), ("a,b", "comma-separated")])
def test_backbone_layers_errors(spec, match):
    with pytest.raises(ConfigError, match=match):
        backbone_layers(spec, 6)


def test_exact_gelu_needs_keras_hubs_feedforward_attribute(embedded):
    """set_hidden_act reaches keras-hub's TransformerEncoder._feedforward_intermediate_dense
    (no public option exists): this fails loudly if an upgrade renames it."""
    _, backbone = embedded
    for layer in backbone.transformer_layers:
        assert hasattr(layer, "_feedforward_intermediate_dense")

    class Renamed:
        transformer_layers = [object()]

    with pytest.raises(BackboneError, match="set_hidden_act needs updating"):
        set_hidden_act(Renamed(), "gelu")


def test_resolve_model_errors(tmp_path):
    with pytest.raises(BackboneError, match="does not exist"):
        resolve_backbone(str(tmp_path / "missing"))
    with pytest.raises(BackboneError, match="no config.json"):
        resolve_backbone(str(tmp_path))
    (tmp_path / "config.json").write_text("{oops")
    with pytest.raises(BackboneError, match="not valid JSON"):
        resolve_backbone(str(tmp_path))
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "gpt2"}))
    with pytest.raises(BackboneError, match="not a BERT"):
        resolve_backbone(str(tmp_path))
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(BackboneError, match="model.safetensors"):
        resolve_backbone(str(tmp_path))


def test_saved_backbone_is_a_model_folder(embedded, tmp_path):
    ref, backbone = embedded
    folder = tmp_path / "ckpt"
    save_backbone(backbone, load_tokenizer(ref), folder, hidden_act(ref), extra={"epoch": 0.5})
    assert not list(tmp_path.glob(".ckpt.tmp-*"))
    saved = resolve_backbone(str(folder))
    assert saved.kind == "keras_hub" and hidden_act(saved) == "gelu"
    data = np.load(REFERENCE)
    inputs = {"token_ids": data["token_ids"], "segment_ids": data["segment_ids"], "padding_mask": data["padding_mask"]}
    again = all_layers_model(load_backbone(saved))(inputs).numpy()
    np.testing.assert_allclose(again, all_layers_model(backbone)(inputs).numpy(), atol=1e-5)
    assert load_tokenizer(saved)("a test")["input_ids"] == load_tokenizer(ref)("a test")["input_ids"]


def test_sentence_pooling_is_read_from_a_sentence_transformers_folder(tmp_path):
    """`sentence_pooling`: the embedded MiniLM declares mean pooling (modules.json -> 1_Pooling/config.json);
    a folder that declares a single cls pooling gives cls; none, several modes or a broken file give None;
    ``FinetuneConfig(pooling="auto")`` resolves to it."""
    from bertvision.training.finetune import FinetuneConfig  # noqa: PLC0415  (only this test)

    embedded = resolve_backbone(None)
    assert sentence_pooling(embedded) == "mean"
    assert FinetuneConfig(task="sst2", out=str(tmp_path / "run"), pooling="auto").pooling == "mean"
    folder = tmp_path / "st"
    (folder / "pool").mkdir(parents=True)
    for name in ("config.json", "model.safetensors"):
        (folder / name).symlink_to(Path(embedded.path) / name)
    ref = resolve_backbone(folder)
    assert sentence_pooling(ref) is None  # a plain BERT folder
    (folder / "modules.json").write_text(json.dumps([{"path": "", "type": "sentence_transformers.models.Transformer"},
                                                     {"path": "pool", "type": "sentence_transformers.models.Pooling"}]))
    for modes, expected in (({"pooling_mode_cls_token": True, "pooling_mode_mean_tokens": False}, "cls"),
                            ({"pooling_mode_cls_token": True, "pooling_mode_mean_tokens": True}, None),
                            ({"pooling_mode_max_tokens": True}, None)):
        (folder / "pool" / "config.json").write_text(json.dumps(modes))
        assert sentence_pooling(ref) == expected
    assert FinetuneConfig(task="sst2", out=str(tmp_path / "run"), backbone=str(folder), pooling="auto").pooling == "cls"
    (folder / "pool" / "config.json").write_text("{not json")
    assert sentence_pooling(ref) is None
