"""Export served runs as TensorFlow SavedModels (Keras export archives).

`export_runs(runs, out)` loads the runs as `bertvision.inference.serving.Predictor`
does (adapters grouped by the backbone they were trained on, fine-tuning runs
with their own BERT) and writes SavedModels whose signatures run each
backbone once and every task's head on its output:

- ``OUT``: ``serving_default`` (also ``serve``): ``token_ids``,
  ``segment_ids``, ``padding_mask`` ``[batch, tokens]`` int32 in (BERT's
  inputs, as `bertvision.data.features.Featurizer` makes them), every task's
  outputs out: ``<task>_probabilities [batch, classes]`` (classification),
  ``<task>_score [batch]`` (regression), ``<task>_start_logits`` /
  ``<task>_end_logits [batch, tokens]`` (SQuAD; decode them with the
  windows' character offsets, `bertvision.data.squad.decode_squad`),
  ``<task>_token_probabilities [batch, tokens, tags]`` (token
  classification: read each word's first sub-word, `Features.word_ids`). Core
  TensorFlow ops only: stock TensorFlow (``saved_model_cli``,
  ``tf.saved_model.load`` without ``tensorflow_text``) and TensorFlow
  Serving's stock binary load it as is.
- ``OUT/text`` (unless ``text=False``): a second SavedModel with the same
  ``serve`` plus ``serve_text`` (``text [batch]`` string) and
  ``serve_text_pair`` (``text``, ``text_pair``): raw strings in, the
  single-sentence (resp. sentence-pair) tasks' outputs out. Tokenized in the
  graph by `GraphTokenizer`: keras-hub's WordPiece (TensorFlow Text's
  FastWordpieceTokenizer) over the backbone's vocabulary, after the Hugging
  Face BertNormalizer's steps (control characters dropped, accents stripped,
  lowercased) and truncated as the Hugging Face fast tokenizer truncates a
  pair (``longest_first``), each task at its own ``max_seq_len``: the same
  token ids as the featurizer on real SST-2, MRPC and SQuAD text (tested).
  Its graph holds TensorFlow Text ops (``import tensorflow_text`` before
  loading; a TF Serving build with TF Text linked in), which is why it is a
  SavedModel of its own: in one graph they kept even ``serving_default``
  from loading without TF Text. SQuAD and token classification are not in
  them: their windows, words and character offsets are made outside the graph.

``OUT/bertvision_export.json`` lists the signatures (and the SavedModel of
each), their outputs, the runs and the backbones.

Example:
    >>> export_runs(["runs/sst2-pooler", "runs/mrpc-cnn"], "exported/")  # doctest: +SKIP
    >>> loaded = tf.saved_model.load("exported/text")   # after import tensorflow_text  # doctest: +SKIP
    >>> loaded.signatures["serve_text"](text=tf.constant(["a gorgeous film"]))["sst2_probabilities"]  # doctest: +SKIP

(not run: an export of two trained runs takes a minute; tests/test_export.py runs it.)
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Sequence

import keras
import numpy as np
import keras_hub
import tensorflow as tf
import tensorflow_text as tf_text

from bertvision import io
from bertvision.config import PER_TOKEN_KINDS
from bertvision.errors import ServeError
from bertvision.inference.config import QUANTIZE
from bertvision.inference.loading import ServedModel
from bertvision.inference.serving import Predictor

__all__ = ["EXPORT_INFO", "GraphTokenizer", "ONNX_FILE", "ONNX_INT8_FILE", "TEXT_DIR", "export_onnx", "export_runs",
           "output_names", "serve_function"]

EXPORT_INFO = "bertvision_export.json"
TEXT_DIR = "text"  # OUT/text: the SavedModel with the raw-text signatures (TensorFlow Text ops)
_IDS = ("token_ids", "segment_ids", "padding_mask")


def _key(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_]", "_", name)


def output_names(model: ServedModel) -> list[str]:
    """The signature outputs of one served model."""
    key = _key(model.name)
    kind = model.task.kind
    if kind in ("classification", "multi_label"):
        return [f"{key}_probabilities"]
    if kind == "regression":
        return [f"{key}_score"]
    if kind == "token_classification":
        return [f"{key}_token_probabilities"]
    return [f"{key}_start_logits", f"{key}_end_logits"]


# ------------------------------------------------------------------ tokenizer


class GraphTokenizer:
    """A Hugging Face BERT fast tokenizer's token ids, computed in the graph.

    Normalizes as ``BertNormalizer`` does (drop NUL, U+FFFD and control
    characters, whitespace to spaces, CJK characters split, NFD + drop
    combining marks when accents are stripped, lowercase with every capital
    sigma as ``σ``, as Rust's per-character lowercase gives), then keras-hub's
    `WordPieceTokenizer` (whitespace and punctuation split, FastWordpiece)
    with the same vocabulary, and packs ``[CLS] a [SEP] (b [SEP])``
    truncating a pair ``longest_first`` as the fast tokenizer does (the
    shorter text keeps its tokens; when both must be cut, each gets half,
    the longer one the odd token).

    `supports(hf_tokenizer)` says whether a tokenizer is of this kind.
    """

    def __init__(self, hf_tokenizer):
        normalizer = json.loads(hf_tokenizer.backend_tokenizer.normalizer.__getstate__())
        self.lowercase = bool(normalizer.get("lowercase", True))
        strip = normalizer.get("strip_accents")
        self.strip_accents = self.lowercase if strip is None else bool(strip)
        self.clean_text = bool(normalizer.get("clean_text", True))
        vocab = hf_tokenizer.get_vocab()
        tokens = [None] * len(vocab)
        for token, i in vocab.items():
            tokens[i] = token
        model = json.loads(hf_tokenizer.backend_tokenizer.model.__getstate__())
        self.wordpiece = keras_hub.tokenizers.WordPieceTokenizer(
            vocabulary=tokens, lowercase=False, strip_accents=False, split=True,
            split_on_cjk=bool(normalizer.get("handle_chinese_chars", True)),
            suffix_indicator=model.get("continuing_subword_prefix", "##"), oov_token=model.get("unk_token", "[UNK]"),
            dtype="int32")
        self.cls_id = int(hf_tokenizer.cls_token_id)
        self.sep_id = int(hf_tokenizer.sep_token_id)
        self.pad_id = int(hf_tokenizer.pad_token_id)
        self._packers: dict[int, keras_hub.layers.MultiSegmentPacker] = {}

    @staticmethod
    def supports(hf_tokenizer) -> bool:
        """A fast tokenizer with a BertNormalizer, a BertPreTokenizer and a
        contiguous WordPiece vocabulary."""
        try:
            backend = hf_tokenizer.backend_tokenizer
            normalizer = json.loads(backend.normalizer.__getstate__())
            pre = json.loads(backend.pre_tokenizer.__getstate__())
            model = json.loads(backend.model.__getstate__())
        except Exception:  # not a fast tokenizer, or parts missing
            return False
        vocab = hf_tokenizer.get_vocab()
        return (normalizer.get("type") == "BertNormalizer" and pre.get("type") == "BertPreTokenizer"
                and model.get("type") == "WordPiece" and sorted(vocab.values()) == list(range(len(vocab))))

    def normalize(self, text):
        if self.clean_text:
            text = tf.strings.regex_replace(text, r"[\x{0}\x{FFFD}]|[^\PC\t\n\r]", "")
            text = tf.strings.regex_replace(text, r"[\s\p{Z}\x{85}]", " ")
        if self.strip_accents:
            text = tf_text.normalize_utf8(text, "NFD")
            text = tf.strings.regex_replace(text, r"\p{Mn}", "")
        if self.lowercase:
            text = tf.strings.lower(tf.strings.regex_replace(text, "Σ", "σ"), encoding="utf-8")
        return text

    def tokenize(self, text):
        """Token ids (no special tokens) of a batch of strings: a ragged ``[B, None]``."""
        return self.wordpiece(self.normalize(text))

    def pack(self, texts: Sequence, max_seq_len: int) -> dict:
        """BERT inputs ``[B, max_seq_len]`` for one text or a pair per row."""
        segments = [self.tokenize(t) for t in texts]
        if len(segments) == 2:
            segments = list(_longest_first(segments[0], segments[1], max_seq_len - 3))
        packer = self._packers.get(max_seq_len)
        if packer is None:
            packer = self._packers[max_seq_len] = keras_hub.layers.MultiSegmentPacker(
                sequence_length=max_seq_len, start_value=self.cls_id, end_value=self.sep_id,
                pad_value=self.pad_id, truncate="waterfall")
        token_ids, segment_ids = packer(tuple(segments) if len(segments) == 2 else segments[0])
        token_ids = tf.cast(token_ids, tf.int32)
        return {"token_ids": token_ids, "segment_ids": tf.cast(segment_ids, tf.int32),
                "padding_mask": tf.cast(token_ids != self.pad_id, tf.int32)}


def _longest_first(a, b, budget: int):
    """Cut a pair of ragged token rows to at most `budget` tokens together,
    as the Hugging Face fast tokenizer's ``longest_first`` strategy does."""
    n1, n2 = a.row_lengths(), b.row_lengths()
    m = tf.constant(budget, n1.dtype)
    swap = n1 > n2
    short = tf.minimum(n1, n2)  # the longer text is cut to what is left (never grows)
    long_new = tf.where(short > m, short, tf.maximum(short, m - short))
    both = short + long_new > m
    short_new = tf.where(both, m // 2, short)
    long_new = tf.where(both, m // 2 + m % 2, long_new)
    fits = n1 + n2 <= m
    k1 = tf.where(fits, n1, tf.where(swap, long_new, short_new))
    k2 = tf.where(fits, n2, tf.where(swap, short_new, long_new))

    def cut(rows, keep):
        return tf.ragged.boolean_mask(rows, tf.ragged.range(rows.row_lengths()) < keep[:, None])

    return cut(a, k1), cut(b, k2)


# ------------------------------------------------------------------- export


def _head_outputs(model: ServedModel, out) -> dict:
    names = output_names(model)
    if model.task.kind == "classification":
        return {names[0]: tf.nn.softmax(tf.cast(out, tf.float32), axis=-1)}
    if model.task.kind == "multi_label":  # one probability per label; the run's thresholds are in export.json
        return {names[0]: tf.sigmoid(tf.cast(out, tf.float32))}
    if model.task.kind == "regression":
        return {names[0]: tf.reshape(tf.cast(out, tf.float32), [-1])}
    if model.task.kind == "token_classification":  # [B, T, C]: read each word's first sub-word
        return {names[0]: tf.nn.softmax(tf.cast(out, tf.float32), axis=-1)}
    return {names[0]: tf.cast(out["start_logits"], tf.float32), names[1]: tf.cast(out["end_logits"], tf.float32)}


def _outputs(predictor: Predictor, models: Sequence[ServedModel], batch_for) -> dict:
    """Every model's outputs; `batch_for(model)` gives its BERT inputs. Each
    (backbone group, input batch) runs once."""
    out, cache = {}, {}
    for model in models:
        group = predictor.groups[model.group]
        batch = batch_for(model)
        key = (model.group, id(batch))
        if model.finetune:
            result = model.model(batch, training=False)
        else:
            if key not in cache:
                cache[key] = group.encoder(batch, training=False)
            result = model.model(model.adapter_inputs(cache[key], batch["padding_mask"]), training=False)
        out.update(_head_outputs(model, result))
    return out


def _text_endpoint(predictor: Predictor, models: Sequence[ServedModel], tokenizers: dict):
    """Raw strings -> `models`' outputs: each (backbone, max_seq_len) packs once."""

    def run(texts):
        packed = {}

        def batch_for(model):
            key = (model.group, model.max_seq_len)
            if key not in packed:
                packed[key] = tokenizers[model.group].pack(texts, model.max_seq_len)
            return packed[key]

        return _outputs(predictor, models, batch_for)

    def serve_text(text):
        return run([text])

    def serve_text_pair(text, text_pair):
        return run([text, text_pair])

    return serve_text if len(models[0].fields) == 1 else serve_text_pair


def _exportable(runs: Sequence[str], out: str, predictor: Predictor | None,
                what: str) -> tuple[Path, Predictor, list[ServedModel]]:
    """``(out, predictor, models)`` of an export, refused before anything is
    written: a used `out`, or a run whose input `what` (one token sequence
    per example) cannot feed (a pair encoded separately)."""
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ServeError(f"--out {out} exists and is not an empty folder")
    predictor = predictor or Predictor.from_runs(runs)
    models = list(predictor.models.values())
    separate = [m.name for m in models if m.pair_mode != "cross"]
    if separate:
        raise ServeError(f"{', '.join(separate)}: trained on a store extracted with --pair-mode separate (each text "
                         f"of a pair encoded on its own), which {what} cannot feed; serve it with pipelines.serve "
                         "instead")
    windowed = [m.name for m in models if m.windows]
    if windowed:
        raise ServeError(f"{', '.join(windowed)}: trained on long documents stored as windows (--doc-stride), whose "
                         f"windows {what} cannot gather per document; serve it with pipelines.serve instead")
    return out, predictor, models


def _archive(predictor: Predictor, models: Sequence[ServedModel]) -> tuple[keras.export.ExportArchive, dict]:
    """An export archive of every backbone and head with the ``serve``
    endpoint (token ids in; core TensorFlow ops only), and its signature info."""
    archive = keras.export.ExportArchive()
    for group in predictor.groups.values():
        if not group.finetune:
            archive.track(group.encoder)
    for model in models:
        archive.track(model.model)

    spec = tf.TensorSpec([None, None], tf.int32)

    def serve(token_ids, segment_ids, padding_mask):
        batch = {"token_ids": token_ids, "segment_ids": segment_ids, "padding_mask": padding_mask}
        return _outputs(predictor, models, lambda model: batch)

    archive.add_endpoint("serve", serve, input_signature=[spec] * 3)
    return archive, {"inputs": list(_IDS), "outputs": [n for m in models for n in output_names(m)],
                     "tasks": [m.name for m in models]}


def export_runs(runs: Sequence[str], out: str, text: bool = True, predictor: Predictor | None = None) -> dict:
    """Write the SavedModel of `runs` (``PATH`` or ``NAME=PATH``) to `out`
    (a new folder; see the module docstring), and with `text` the text
    SavedModel to ``out/text``. Returns what ``bertvision_export.json``
    records."""
    out, predictor, models = _exportable(runs, out, predictor, "this export's one-sequence signature")
    archive, serve = _archive(predictor, models)
    signatures = {"serve": {**serve, "saved_model": "."}}
    text_archive, skipped = None, {}
    if text:
        tokenizers = {}
        for name, group in predictor.groups.items():
            if GraphTokenizer.supports(group.tokenizer):
                tokenizers[name] = GraphTokenizer(group.tokenizer)
            else:
                skipped[name] = f"{type(group.tokenizer).__name__} is not a BERT WordPiece fast tokenizer"
        for arity, endpoint, fields in ((1, "serve_text", ("text",)), (2, "serve_text_pair", ("text", "text_pair"))):
            # per-token tasks answer on the ids signature only (their outputs are per sub-word position)
            chosen = [m for m in models if m.task.kind not in PER_TOKEN_KINDS and len(m.fields) == arity
                      and m.group in tokenizers]
            if not chosen:
                continue
            if text_archive is None:  # the text signatures' own SavedModel: TF Text ops load with all of it
                text_archive, _ = _archive(predictor, models)
                for tokenizer in tokenizers.values():
                    tokenizer.wordpiece.build(None)
                    text_archive.track(tokenizer.wordpiece)
            text_archive.add_endpoint(endpoint, _text_endpoint(predictor, chosen, tokenizers),
                                      input_signature=[tf.TensorSpec([None], tf.string)] * arity)
            signatures[endpoint] = {"inputs": list(fields), "outputs": [n for m in chosen for n in output_names(m)],
                                    "tasks": [m.name for m in chosen],
                                    "max_seq_len": {m.name: m.max_seq_len for m in chosen},
                                    "saved_model": TEXT_DIR}
    info = {"format": "bertvision-export", "signatures": signatures, "default_signature": "serve",
            "tasks": {m.name: {"task": m.task.name, "kind": m.task.kind, "run": str(m.run_dir),
                               "labels": list(m.task.label_names), "outputs": output_names(m),
                               "thresholds": m.results.thresholds,
                               "featurizer": m.featurizer.get_config(), "backbone": m.group} for m in models},
            "backbones": [g.info() for g in predictor.groups.values()],
            "text_signatures_skipped": skipped,
            "needs_tensorflow_text": False,  # OUT itself: core ops only
            "text_saved_model": TEXT_DIR if text_archive is not None else None}
    with io.atomic_folder(out) as tmp:
        archive.write_out(str(tmp), verbose=False)
        if text_archive is not None:
            text_archive.write_out(str(Path(tmp) / TEXT_DIR), verbose=False)
        io.atomic_write_json(Path(tmp) / EXPORT_INFO, info)
    return info


# ----------------------------------------------------------------------- ONNX

ONNX_FILE = "model.onnx"
ONNX_INT8_FILE = "model.int8.onnx"
ONNX_OPSET = 17


def serve_function(predictor: Predictor) -> tf.types.experimental.GenericFunction:
    """The ``serve`` graph of `predictor`'s models as a `tf.function`:
    ``token_ids``, ``segment_ids``, ``padding_mask`` ``[batch, tokens]``
    int32 in, every task's outputs out (each backbone once). What
    `export_onnx` converts, and TensorFlow's side of its parity benchmark."""
    models = list(predictor.models.values())
    spec = [tf.TensorSpec([None, None], tf.int32, name=n) for n in _IDS]

    @tf.function(input_signature=spec)
    def serve(token_ids, segment_ids, padding_mask):
        batch = {"token_ids": token_ids, "segment_ids": segment_ids, "padding_mask": padding_mask}
        return _outputs(predictor, models, lambda model: batch)

    return serve


def _erfc_as_erf(ctx, node, name, args):
    """tf2onnx has no converter for ``Erfc`` (in the backbone's exact GELU,
    Keras' ``0.5 * x * erfc(-x / sqrt(2))``): ``erfc(x) = 1 - erf(x)``,
    both in ONNX."""
    from tf2onnx import utils  # the onnx extra, imported by export_onnx before this runs

    dtype = utils.map_onnx_to_numpy_type(ctx.get_dtype(node.input[0]))
    erf = ctx.make_node("Erf", [node.input[0]], op_name_scope=node.name)
    one = ctx.make_const(utils.make_name(f"{node.name}_one"), np.array(1, dtype=dtype))
    ctx.replace_inputs(node, [one.output[0], erf.output[0]])
    node.type = "Sub"


def export_onnx(runs: Sequence[str], out: str, quantize: str | None = None,
                predictor: Predictor | None = None) -> dict:
    """Write `runs` as one ONNX model, ``OUT/model.onnx``: the ``serve``
    signature's graph (every backbone once, every head on its output; the
    same `_outputs` as the SavedModel), converted by tf2onnx. Inputs
    ``token_ids``, ``segment_ids``, ``padding_mask`` ``[batch, tokens]``
    int32, outputs as ``serve``'s. ``quantize="int8"`` also writes
    ``OUT/model.int8.onnx``, onnxruntime's dynamic int8 quantization of the
    weights. ``OUT/bertvision_export.json`` lists inputs, outputs, tasks
    (labels, featurizer) and files; a run that needs what the graph cannot
    hold (a separately encoded pair) is refused, as for the SavedModel.

    >>> export_onnx(["runs/sst2-pooler", "runs/mrpc-cnn"], "exported-onnx/", quantize="int8")  # doctest: +SKIP
    """
    from bertvision.extras import import_extra

    tf2onnx = import_extra("tf2onnx", "onnx", "--format onnx")
    if quantize is not None and quantize not in QUANTIZE:
        raise ServeError(f"--quantize must be one of {', '.join(QUANTIZE)}, got {quantize!r}")
    if quantize:
        quantization = import_extra("onnxruntime.quantization", "onnx", "--quantize int8")
    out, predictor, models = _exportable(runs, out, predictor, "the ONNX graph's one token sequence per example")
    serve = serve_function(predictor)
    spec = list(serve.input_signature)
    outputs = [n for m in models for n in output_names(m)]
    files = {"float32": ONNX_FILE}
    with io.atomic_folder(out) as tmp:
        tf2onnx.convert.from_function(serve, input_signature=spec, opset=ONNX_OPSET,
                                      custom_op_handlers={"Erfc": (_erfc_as_erf, [])},
                                      output_path=str(Path(tmp) / ONNX_FILE))
        if quantize:
            quantization.quantize_dynamic(str(Path(tmp) / ONNX_FILE), str(Path(tmp) / ONNX_INT8_FILE),
                                          weight_type=quantization.QuantType.QInt8)
            files["int8"] = ONNX_INT8_FILE
        info = {"format": "bertvision-onnx", "files": files, "opset": ONNX_OPSET, "inputs": list(_IDS),
                "outputs": outputs,
                "tasks": {m.name: {"task": m.task.name, "kind": m.task.kind, "run": str(m.run_dir),
                                   "labels": list(m.task.label_names), "outputs": output_names(m),
                                   "featurizer": m.featurizer.get_config(), "backbone": m.group} for m in models},
                "backbones": [g.info() for g in predictor.groups.values()]}
        io.atomic_write_json(Path(tmp) / EXPORT_INFO, info)
    return info
