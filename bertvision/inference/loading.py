"""Loading run folders for serving: each run checked against the backbone it
will be fed by, and grouped.

`load_served_runs([...])` reads the runs' ``results.json`` (`bertvision.runs`),
makes a `ServedModel` of each (its model, task, featurizer and what its
input is) and groups them by backbone: an `AdapterGroup` holds one frozen
backbone and every adapter trained on its activations (checked by the
sha256 of its config and weights recorded in each run's ``backbone`` and
``store_signature``), a `FinetuneGroup` a fine-tuning run's own `BertTask`
(its final checkpoint). The groups run the forward passes for
`bertvision.inference.serving.Predictor`.

Example:
    >>> models, groups = load_served_runs([RUN])   # run folders (here one SST-2 linear probe)
    >>> [g.name for g in groups]
    ['all-MiniLM-L6-v2@53aa5117']
"""

from __future__ import annotations

import math
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import keras
import numpy as np
import tensorflow as tf

from bertvision.models.bert_task import BertTask
from bertvision.models.backbone import (EMBEDDED_NAMES, BackboneRef, all_layers_model, backbone_identity, hidden_act,
                                        load_backbone, load_tokenizer, reduce_tokens, resolve_backbone,
                                        set_hidden_act)
from bertvision.config import DEFAULT_MAX_WINDOWS, pair_texts
from bertvision.errors import BertVisionError, ServeError
from bertvision.data.features import Features, Featurizer, FeaturizerConfig, bucket_length
from bertvision.inference.predict import (load_adapter_run, make_infer_fn, model_input_names, model_token_dim,
                                          warn_if_store_replaced)
from bertvision.runs import RunFolder, RunResults
from bertvision.store.format import dequantize_int8, open_store, quantize_int8
from bertvision.data.tasks import TaskSpec, get_task
from bertvision.inference.inputs import input_fields


__all__ = ["AdapterGroup", "BackboneGroup", "FinetuneGroup", "Job", "ServedModel", "load_served_runs",
           "parse_run_spec"]

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


def parse_run_spec(spec: str | tuple[str | None, str]) -> tuple[str | None, str]:
    """``"NAME=PATH"`` -> ``(NAME, PATH)``; ``"PATH"`` -> ``(None, PATH)``.

    >>> parse_run_spec("sentiment=runs/sst2-pooler")
    ('sentiment', 'runs/sst2-pooler')
    """
    if isinstance(spec, tuple):
        return spec
    text = str(spec)
    name, sep, path = text.partition("=")
    if sep and name and "/" not in name and not Path(text).exists():
        if not _NAME.match(name):
            raise ServeError(f"--run {text!r}: the name {name!r} must be letters, digits, '_', '-' or '.'")
        return name, path
    return None, text


# ------------------------------------------------------------------ models


@dataclass
class ServedModel:
    """One served run: an adapter (reading a shared backbone's activations) or
    a fine-tuned BERT (its own backbone)."""

    name: str
    run_dir: Path
    results: RunResults
    task: TaskSpec
    featurizer: Featurizer
    model: Any  # the adapter (keras.Model) or the BertTask
    group: str = ""
    finetune: bool = False
    layers: list | None = None  # backbone layers in the adapter's input (its store's)
    token_mode: str | None = None
    pair_mode: str = "cross"  # separate: each text of a pair is its own row; the adapter reads both
    dtype: str | None = None
    quantized: bool = False  # trained on an int8 store: its input goes through the same int8 round trip
    featurizer_source: str = "store"
    threshold: float = 0.0
    layer_positions: list = field(default_factory=list)  # into its group's union of layers
    calls: int = 0

    def __post_init__(self):
        self.infer = make_infer_fn(self.model)
        self.input_names = None if self.finetune else model_input_names(self.model)
        self.token_dim = None if self.finetune else model_token_dim(self.model)  # fixed token length, or None

    @property
    def max_seq_len(self) -> int:
        return self.featurizer.max_seq_len

    @property
    def fields(self) -> tuple[str, ...]:
        return input_fields(self.task)

    @property
    def rows_per_example(self) -> int:
        """Model inputs per example (a span question's windows aside): 2 for a separately encoded pair."""
        return pair_texts(self.pair_mode)

    @property
    def windows(self) -> bool:
        """Its store keeps long documents as windows: a text is split as
        extraction split it, and the adapter pools an example's windows."""
        return self.featurizer.config.windows

    def cut_note(self, cut: int, total: int) -> str:
        """What `predict` says when `cut` of `total` texts had more windows
        than the store's ``max_windows`` (`Job.cut_texts`)."""
        cap = self.featurizer.config.max_windows
        return (f"note: {self.name}: {cut} of {total} text(s) longer than {cap} windows of {self.max_seq_len} "
                f"tokens; their first {cap} windows were read (the store's --max-windows)")

    def record_bounds(self, features) -> np.ndarray:
        """Where each output row's model inputs start in `features` (as the
        store's records: a document's windows, a pair's two texts, else one
        row each; `Features.record_bounds`)."""
        return features.record_bounds(self.rows_per_example, self.windows)

    def adapter_inputs(self, acts, padding_mask, t: int | None = None, bounds: np.ndarray | None = None) -> dict:
        """The adapter's input from its group's activations ``[B, K, T, H]``
        (float32, every layer of the group) and ``padding_mask [B, T]``: its
        layers, reduced by its token mode, padding zeroed and the token axis
        cut or zero-padded to `t` (sequence), a document's windows gathered
        into ``[D, W, ...]`` with ``window_mask`` (`windows`: rows
        ``bounds[d]:bounds[d + 1]`` are document ``d``'s), int8-quantized and
        back if its store was int8, cast to its dtype: what its store's
        reader gives for the same rows."""
        x = tf.gather(acts, self.layer_positions, axis=1)
        mask = tf.cast(padding_mask, tf.int32)
        if self.token_mode == "sequence":
            x = x * tf.cast(mask, x.dtype)[:, None, :, None]
            if t is not None:
                have = tf.shape(x)[2]
                x = tf.pad(x[:, :, :t], [[0, 0], [0, 0], [0, tf.maximum(t - have, 0)], [0, 0]])
                mask = tf.pad(mask[:, :t], [[0, 0], [0, tf.maximum(t - have, 0)]])
        else:
            x = reduce_tokens(x, mask, self.token_mode)
            if self.pair_mode == "separate":  # rows a, b, a, b, ... -> [N, 2, K, H]
                x = tf.reshape(x, [-1, 2, x.shape[1], x.shape[2]])
        window_mask = None
        if self.windows:  # [D, W, ...]: each document's windows, padded (zeros) to the most windows
            counts = np.diff(bounds)
            slot = np.arange(counts.max())[None, :]
            real = slot < counts[:, None]
            rows = tf.constant(bounds[:-1, None] + np.minimum(slot, counts[:, None] - 1))
            window_mask = tf.constant(real.astype(np.int32))
            x = tf.gather(x, rows) * tf.reshape(tf.cast(window_mask, x.dtype), [*real.shape] + [1] * (x.shape.rank - 1))
            mask = tf.gather(mask, rows) * window_mask[:, :, None]
        if self.quantized:
            x = dequantize_int8(*quantize_int8(x), dtype=tf.float32)
        out = {"activations": tf.cast(x, self.dtype)}
        if self.token_mode == "sequence":
            out["padding_mask"] = mask
        if window_mask is not None:
            out["window_mask"] = window_mask
        return out

    def info(self) -> dict:
        """What ``GET /v1/models`` says about it."""
        r = self.results
        out = {"name": self.name, "task": self.task.name, "kind": self.task.kind, "inputs": list(self.fields),
               "run": str(self.run_dir), "run_type": r.run_type, "method": r.method, "main_metric": r.main_metric,
               "dev_metrics": r.dev_metrics, "trainable_params": r.trainable_params, "backbone": self.group,
               "featurizer": {**self.featurizer.get_config(), "source": self.featurizer_source}}
        if self.task.kind in ("classification", "multi_label", "token_classification"):
            out["labels"] = list(self.task.label_names)
        if self.task.kind == "span":  # answers "" above this no-answer probability (the run's dev best_f1_thresh)
            out["no_answer_threshold"] = 1.0 / (1.0 + math.exp(-self.threshold)) if math.isfinite(self.threshold) \
                else float(self.threshold > 0)
        if not self.finetune:
            out.update(layers=self.layers, token_mode=self.token_mode, pair_mode=self.pair_mode, dtype=self.dtype,
                       store_dtype="int8" if self.quantized else self.dtype)
        return out


@dataclass
class Job:
    """The tokenized inputs of one served model for some examples (one request's share)."""

    model: ServedModel
    examples: list
    features: Features

    @property
    def rows(self) -> int:
        return len(self.features)

    @property
    def bounds(self) -> np.ndarray:
        """Where each output row's model inputs start (`ServedModel.record_bounds`)."""
        return self.model.record_bounds(self.features)

    @property
    def uids(self) -> list:
        """The uid of each output row (a span question's windows repeat it)."""
        return [self.examples[i].uid for i in self.features.example_index[self.bounds[:-1]]]

    @property
    def cut_texts(self) -> int:
        """Texts of a long-document model's job that had more windows than
        its store's ``max_windows`` and were read up to them."""
        return 0 if self.features.cut_examples is None else int(self.features.cut_examples.size)

    def split_windows(self, max_rows: int) -> list["Job"]:
        """A long-document model's job cut into jobs of whole documents of
        at most `max_rows` windows together (a document of more windows on
        its own), so that one forward pass holds a bounded number of rows;
        any other job as it is."""
        if not self.model.windows or self.rows <= max_rows:
            return [self]
        bounds, jobs, first = self.bounds, [], 0  # a document per example: bounds[d] is example d's first row
        while first < len(bounds) - 1:
            end = first + 1
            while end < len(bounds) - 1 and bounds[end + 1] - bounds[first] <= max_rows:
                end += 1
            features = self.features.select(slice(bounds[first], bounds[end]))
            features.example_index = features.example_index - first
            if self.features.cut_examples is not None:  # the texts of these documents that were cut
                cut = self.features.cut_examples
                features.cut_examples = cut[(cut >= first) & (cut < end)] - first
            jobs.append(Job(self.model, self.examples[first:end], features))
            first = end
        return jobs


_ID_SPEC = {k: tf.TensorSpec([None, None], tf.int32) for k in ("token_ids", "segment_ids", "padding_mask")}


class BackboneGroup:
    """Models that share one backbone forward pass."""

    def __init__(self, name: str, identity: dict, tokenizer, pad_id: int):
        self.name, self.identity, self.tokenizer, self.pad_id = name, identity, tokenizer, pad_id
        self.members: list[ServedModel] = []
        self.forward_passes = 0
        self.rows_forwarded = 0

    @property
    def max_seq_len(self) -> int:
        return max(m.max_seq_len for m in self.members)

    def _rows(self, jobs: Sequence[Job]):
        """The distinct rows of `jobs` (token and segment ids, unpadded) and,
        per job, the index of each of its rows among them."""
        index: dict = {}
        rows, job_rows = [], []
        for job in jobs:
            f = job.features
            lengths = f.padding_mask.sum(axis=1)
            mine = np.empty(len(f), np.int64)
            for r, n in enumerate(lengths.tolist()):
                ids, seg = f.token_ids[r, :n], f.segment_ids[r, :n]
                key = (ids.tobytes(), seg.tobytes())
                if key not in index:
                    index[key] = len(rows)
                    rows.append((ids, seg))
                mine[r] = index[key]
            job_rows.append(mine)
        return rows, job_rows

    def _pack(self, rows, t: int) -> dict:
        n = len(rows)
        token_ids = np.full((n, t), self.pad_id, np.int32)
        segment_ids = np.zeros((n, t), np.int32)
        mask = np.zeros((n, t), np.int32)
        for i, (ids, seg) in enumerate(rows):
            token_ids[i, :len(ids)], segment_ids[i, :len(seg)], mask[i, :len(ids)] = ids, seg, 1
        return {"token_ids": token_ids, "segment_ids": segment_ids, "padding_mask": mask}

    def info(self) -> dict:
        ident = self.identity
        return {"name": self.name, "backbone": ident.get("name"), "path": ident.get("path"),
                "config_sha256": ident.get("config_sha256"), "weights_sha256": ident.get("weights_sha256"),
                "tasks": [m.name for m in self.members], "forward_passes": self.forward_passes}


class AdapterGroup(BackboneGroup):
    """A frozen backbone and the adapters trained on its activations."""

    finetune = False

    def __init__(self, name, identity, ref: BackboneRef, backbone, tokenizer, jit_compile: bool):
        super().__init__(name, identity, tokenizer, int(tokenizer.pad_token_id))
        self.ref, self.backbone, self.jit_compile = ref, backbone, jit_compile
        self.layers: list[int] = []

    def build(self) -> None:
        """The forward pass to the union of the members' layers."""
        self.layers = sorted({i for m in self.members for i in m.layers})
        for m in self.members:
            m.layer_positions = [self.layers.index(i) for i in m.layers]
        model = all_layers_model(self.backbone, self.layers)
        self.encoder = model
        self.forward = tf.function(lambda batch: model(batch, training=False), input_signature=[_ID_SPEC],
                                   jit_compile=self.jit_compile)

    def run(self, jobs: Sequence[Job]) -> list:
        rows, job_rows = self._rows(jobs)
        lengths = np.array([len(r[0]) for r in rows])
        t = bucket_length(int(lengths.max()), self.max_seq_len, fine=True)
        batch = self._pack(rows, t)
        acts = self.forward({k: tf.constant(v) for k, v in batch.items()})  # [U, K, T, H] float32
        mask = tf.constant(batch["padding_mask"])
        self.forward_passes += 1
        self.rows_forwarded += len(rows)
        outputs: list = [None] * len(jobs)
        by_model: dict[str, list[int]] = {}
        for i, job in enumerate(jobs):
            by_model.setdefault(job.model.name, []).append(i)
        shared: dict = {}  # adapters reading the same rows, layers, token mode and dtypes share one input
        for ids in by_model.values():
            model = jobs[ids[0]].model
            idx = np.concatenate([job_rows[i] for i in ids])
            # a sequence adapter's token axis: the forward pass's own length (masked and zero-padded, the
            # models' outputs do not depend on it), or the fixed length a model was built for
            t_model = (model.token_dim or t) if model.token_mode == "sequence" else None
            counts = [len(jobs[i].bounds) - 1 for i in ids]  # output rows of each job
            bounds = None
            if model.windows:  # each job's documents, as rows of idx (the model's rows of all its jobs)
                offsets = np.cumsum([0] + [len(job_rows[i]) for i in ids])
                bounds = np.concatenate([[0]] + [jobs[i].bounds[1:] + off for i, off in zip(ids, offsets)])
            key = (tuple(model.layer_positions), model.token_mode, model.pair_mode, model.dtype, model.quantized,
                   t_model, idx.tobytes(), None if bounds is None else bounds.tobytes())
            if key not in shared:
                every = len(idx) == len(rows) and np.array_equal(idx, np.arange(len(rows)))
                shared[key] = model.adapter_inputs(acts if every else tf.gather(acts, idx),
                                                   mask if every else tf.gather(mask, idx), t_model, bounds)
            inputs = {k: v for k, v in shared[key].items() if k in model.input_names}
            out = model.infer(inputs)
            model.calls += 1
            start = 0
            for i, n in zip(ids, counts):
                outputs[i] = _take(out, slice(start, start + n))
                start += n
        return outputs


class FinetuneGroup(BackboneGroup):
    """A fine-tuning run: its BertTask is backbone and head."""

    finetune = True

    def __init__(self, name, identity, tokenizer, jit_compile: bool):
        super().__init__(name, identity, tokenizer, int(tokenizer.pad_token_id))
        self.jit_compile = jit_compile

    def build(self) -> None:
        (member,) = self.members
        task = member.model
        self.forward = tf.function(lambda batch: task(batch, training=False), input_signature=[_ID_SPEC],
                                   jit_compile=self.jit_compile)

    def run(self, jobs: Sequence[Job]) -> list:
        rows, job_rows = self._rows(jobs)
        lengths = np.array([len(r[0]) for r in rows])
        t = bucket_length(int(lengths.max()), self.max_seq_len, fine=True)
        out = self.forward({k: tf.constant(v) for k, v in self._pack(rows, t).items()})
        self.forward_passes += 1
        self.rows_forwarded += len(rows)
        self.members[0].calls += 1
        return [_take(out, idx) for idx in job_rows]


def _take(out, rows) -> Any:
    """Rows of a model output (a tensor or a dict of tensors) as numpy."""
    if isinstance(out, dict):
        return {k: np.asarray(v)[rows] for k, v in out.items()}
    return np.asarray(out)[rows]


# ---------------------------------------------------------------- loading


def load_served_runs(runs: Sequence[str | tuple[str | None, str]], jit_compile: bool = False) -> tuple[list, list]:
    """Load and check run folders (``PATH`` or ``NAME=PATH``; the name defaults
    to the task's, or the folder's name when two runs have the same task):
    ``(served models, backbone groups)``, each group built (traced)."""
    specs = [parse_run_spec(r) for r in runs]
    if not specs:
        raise ServeError("no runs to serve: give at least one --run")
    loaded = []
    for name, path in specs:
        run = RunFolder(path)
        results = run.results()
        loaded.append((name, Path(path), results))
    names = _names(loaded)
    models: list[ServedModel] = []
    groups: dict[str, BackboneGroup] = {}
    backbones: dict[str, tuple] = {}
    for name, (_, path, results) in zip(names, loaded):
        where = f"run {path}"
        if results.run_type == "fit":
            results, adapter = load_adapter_run(path)
            if not results.backbone:
                raise ServeError(f"{where}: results.json records no backbone; cannot tell which BERT feeds it")
            key = _identity_key(results.backbone)
            if key not in backbones:
                ref = _backbone_ref(results.backbone, where)
                backbones[key] = (load_backbone(ref), load_tokenizer(ref))
                groups[key] = AdapterGroup(_group_name(results.backbone), backbone_identity(ref), ref,
                                            *backbones[key], jit_compile)
            backbone, tokenizer = backbones[key]
            model = _adapter_model(name, path, results, adapter, tokenizer, groups[key].name, where)
            _check_adapter(model, backbone, where)
            groups[key].members.append(model)
        elif results.run_type == "finetune":
            model, group = _load_finetune(name, path, results, where, jit_compile)
            groups[f"finetune:{name}"] = group  # its own BERT, even when another name serves the same run
        else:
            raise ServeError(f"{where}: run_type {results.run_type!r} cannot be served (serve the runs an "
                             "ensemble combines, not the ensemble)")
        models.append(model)
    for group in groups.values():
        group.build()
    return models, list(groups.values())


def _identity_key(identity: dict) -> str:
    c, w = identity.get("config_sha256"), identity.get("weights_sha256")
    return f"{c}:{w}" if c or w else f"preset:{identity.get('name')}"


def _group_name(identity: dict) -> str:
    sha = identity.get("weights_sha256")
    return f"{identity.get('name')}@{sha[:8]}" if sha else str(identity.get("name"))


def _backbone_ref(identity: dict, where: str) -> BackboneRef:
    """The backbone a run's activations came from, checked against the
    sha256 of its config and weights as the run recorded them."""
    path = identity.get("path")
    if path and Path(path).exists():
        ref = BackboneRef(identity.get("name") or Path(path).name, identity.get("kind") or "hf", str(path),
                          identity.get("tokenizer_path"))
    elif identity.get("name") in EMBEDDED_NAMES:
        ref = resolve_backbone(None)  # the embedded MiniLM, installed elsewhere on this machine
    elif identity.get("kind") == "preset":
        ref = resolve_backbone(identity.get("name"))
    else:
        raise ServeError(f"{where}: its backbone {identity.get('name')!r} is not at {path} any more")
    have = backbone_identity(ref)
    for key in ("config_sha256", "weights_sha256"):
        if identity.get(key) != have.get(key):
            raise ServeError(f"{where}: backbone {ref.path} has {key} {str(have.get(key))[:12]}, but the run was "
                             f"trained on activations of {str(identity.get(key))[:12]}")
    return ref


def _store_featurizer(results: RunResults, where: str) -> tuple[dict, str]:
    """The featurizer settings of the store an adapter was trained on (its
    manifest), or extraction's defaults at its max_seq_len if the store is gone."""
    sig = results.store_signature or {}
    if results.store:
        try:
            store = open_store(results.store).head(results.spec.label_column)  # the run's label column
        except BertVisionError:
            store = None
        if store is not None:
            if store.signature() != sig:
                raise ServeError(f"{where}: the store {results.store} no longer holds what the run was trained on "
                                 "(re-extracted with other settings?)")
            warn_if_store_replaced(results, store, where)
            return {"max_seq_len": store.max_seq_len, **store.featurizer}, "store"
    print(f"warning: {where}: its store {results.store} is not readable; tokenizing with extraction's defaults "
          f"(max_seq_len {sig.get('max_seq_len')}, doc_stride 128, max_query_len 64)", file=sys.stderr)
    windows = sig.get("windows")  # long documents: the run's signature keeps how they were split
    return {"max_seq_len": int(sig["max_seq_len"]),
            **({"doc_stride": int(windows["doc_stride"]), "windows": True,
                "max_windows": int(windows.get("max_windows", DEFAULT_MAX_WINDOWS))} if windows else {})}, "defaults"


def _names(loaded) -> list[str]:
    """Served names: the given one, else the task's, else (two runs of one
    task) the run folder's."""
    tasks = [r.task for _, _, r in loaded]
    names = []
    for (name, path, results) in loaded:
        if name is None:
            name = results.task if tasks.count(results.task) == 1 else path.resolve().name
        if not _NAME.match(name):
            raise ServeError(f"run {path}: name {name!r} is not usable as a task name; give --run NAME={path}")
        names.append(name)
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ServeError(f"two runs would be served as {dup[0]!r}; name them: --run NAME=PATH")
    return names


def _adapter_model(name: str, path: Path, results: RunResults, adapter, tokenizer, group: str,
                   where: str) -> ServedModel:
    sig = results.store_signature
    config, source = _store_featurizer(results, where)
    task = results.spec
    return ServedModel(name=name, run_dir=path, results=results, task=task,
                       featurizer=Featurizer.from_config(tokenizer, config), model=adapter, group=group,
                       layers=list(sig["layers"]), token_mode=sig["token_mode"],
                       pair_mode=sig.get("pair_mode", "cross"), dtype=_dtype(adapter),
                       quantized=sig.get("dtype") == "int8",
                       featurizer_source=source,
                       threshold=results.best_null_odds if task.kind == "span" else 0.0)


def _dtype(model) -> str:
    struct = model.input
    acts = struct["activations"] if isinstance(struct, dict) else (
        struct[0] if isinstance(struct, (list, tuple)) else struct)
    return str(keras.backend.standardize_dtype(acts.dtype))


def _check_adapter(model: ServedModel, backbone, where: str) -> None:
    """The adapter reads the activations this backbone gives: the same
    backbone (sha256 of config and weights, in its results and its store
    signature), hidden size and layers."""
    r = model.results
    sig_bb = (r.store_signature or {}).get("backbone") or {}
    for key in ("config_sha256", "weights_sha256"):
        if sig_bb.get(key) != (r.backbone or {}).get(key):
            raise ServeError(f"{where}: its results' backbone and store signature disagree on {key}")
    hidden = int((r.store_signature or {}).get("hidden", -1))
    if hidden != int(backbone.hidden_dim):
        raise ServeError(f"{where}: trained on hidden size {hidden}, the backbone has {backbone.hidden_dim}")
    if not model.layers or max(model.layers) > backbone.num_layers:
        raise ServeError(f"{where}: layers {model.layers} are not layers of a {backbone.num_layers}-layer backbone")


def _load_finetune(name: str, path: Path, results: RunResults, where: str, jit_compile: bool):
    rel = (results.checkpoints or {}).get("final")
    if not rel or not (path / rel).is_dir():
        raise ServeError(f"{where}: no final checkpoint ({rel}); not a finished fine-tuning run")
    ckpt = path / rel
    ref = resolve_backbone(str(ckpt))
    try:
        task_model = BertTask.from_preset(str(ckpt))
    except Exception as err:  # keras-hub raises many types for a damaged preset
        raise ServeError(f"{ckpt}: cannot load the fine-tuned task ({err})") from err
    set_hidden_act(task_model.backbone, hidden_act(ref))
    tokenizer = load_tokenizer(ref)
    hp = results.hyperparameters
    featurizer = Featurizer(tokenizer, **{k: int(hp.get(k) or FeaturizerConfig().to_dict()[k])
                                          for k in ("max_seq_len", "doc_stride", "max_query_len")})
    task = results.spec  # a user task: the spec the run saved
    identity = backbone_identity(ref)
    group = FinetuneGroup(f"{name}:{_group_name(identity)}", identity, tokenizer, jit_compile)
    model = ServedModel(name=name, run_dir=path, results=results, task=task, featurizer=featurizer,
                        model=task_model, group=group.name, finetune=True, featurizer_source="run",
                        threshold=results.best_null_odds if task.kind == "span" else 0.0)
    group.members.append(model)
    return model, group
