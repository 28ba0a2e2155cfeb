"""Serving trained runs on raw text: one backbone forward pass feeding many adapters.

`Predictor.from_runs([...])` loads run folders (adapter fit runs and
fine-tuning runs) through `bertvision.inference.loading.load_served_runs`, which
checks that the adapters it groups on one backbone were really trained on
that backbone's activations (the sha256 of its config and weights recorded
in each run's ``backbone`` / ``store_signature`` against the files loaded),
and groups them:

- an **adapter group** holds one frozen backbone and every adapter trained on
  its activations. For a batch of inputs it tokenizes each input once (the
  `Featurizer` of each adapter's store: same truncation, same SQuAD windows),
  runs the backbone **once** over the distinct rows, to the union of the
  layers the adapters read, and derives each adapter's input from that one
  forward pass: its stored layers, reduced by its token mode (`cls`, `mean`,
  `sequence`, `bertvision.models.backbone.reduce_tokens`), int8-quantized and back
  if its store was int8, and cast to the dtype its store's reader gives,
  exactly as extraction wrote them and the store reader gives them;
- a **fine-tuning run** (run_type ``finetune``) runs its own `BertTask`
  (the final checkpoint, a keras-hub task preset) on its rows.

Outputs go through `Predictions.from_outputs` (softmax, SQuAD windows) and
`Predictions.decode` (SQuAD n-best decoding with the null score), so they are
what ``pipelines.predict`` computes from a store on the same examples.

Example:
    >>> predictor = Predictor.from_runs(["runs/sst2-pooler", "runs/mrpc-cnn"])  # doctest: +SKIP
    >>> predictor.predict({"sst2": [{"text": "a gorgeous film"}],
    ...                    "mrpc": [{"text": "He left.", "text_pair": "He went away."}]})  # doctest: +SKIP
    {'sst2': [{'label': 'positive', 'probabilities': {...}}], 'mrpc': [...]}

    Run here on one run (``RUN``, an SST-2 linear probe of a few examples):

    >>> predictor = Predictor.from_runs([RUN])
    >>> results = predictor.predict({"sst2": [{"text": "a gorgeous film"}, {"text": "dull"}]})["sst2"]
    >>> [(r["label"] in ("negative", "positive"), sorted(r["probabilities"])) for r in results]
    [(True, ['negative', 'positive']), (True, ['negative', 'positive'])]
    >>> predictor.stats()["forward_passes"]   # one pass of the shared backbone
    {'all-MiniLM-L6-v2@53aa5117': 1}
"""

from __future__ import annotations

import math
import os
import sys
import threading
from typing import Any, Mapping, Sequence

import numpy as np

from bertvision.config import PER_TOKEN_KINDS
from bertvision.data.conll import entities
from bertvision.data.features import word_spans
from bertvision.data.readers import Example
from bertvision.errors import BertVisionError, ServeError
from bertvision.runs import Predictions, RunFolder
from bertvision.inference.loading import BackboneGroup, Job, ServedModel, load_served_runs
from bertvision.inference.predict import predict_run
from bertvision.store.format import Store, open_store


__all__ = ["Predictor", "predict_split", "tagged_result"]


class Predictor:
    """Runs on raw inputs, grouped by backbone (see the module docstring).

    Build with `from_runs`. `encode` turns one model's inputs into a `Job`
    (tokenized, validated); `forward` runs any list of jobs (of any models)
    with one forward pass per backbone; `predict` and `predict_examples` do
    both.
    """

    def __init__(self, models: Sequence[ServedModel], groups: Sequence[BackboneGroup]):
        self.models = {m.name: m for m in models}
        self.groups = {g.name: g for g in groups}
        self._lock = threading.Lock()

    # ------------------------------------------------------------- loading
    @classmethod
    def from_runs(cls, runs: Sequence[str | tuple[str | None, str]], jit_compile: bool = False) -> "Predictor":
        """Load run folders (``PATH`` or ``NAME=PATH``; the name defaults to the
        task's, or the folder's name when two runs have the same task): see
        `bertvision.inference.loading.load_served_runs`."""
        return cls(*load_served_runs(runs, jit_compile))

    # ------------------------------------------------------------ describing
    @property
    def names(self) -> list[str]:
        return list(self.models)

    def info(self) -> dict:
        """Tasks, runs and backbones (``GET /v1/models``)."""
        return {"tasks": [m.info() for m in self.models.values()],
                "backbones": [{**g.info(), "kind": "fine-tuned" if g.finetune else "frozen, shared",
                               **({} if g.finetune else {"layers": g.layers})} for g in self.groups.values()]}

    def stats(self) -> dict:
        return {"forward_passes": {g.name: g.forward_passes for g in self.groups.values()},
                "rows_forwarded": {g.name: g.rows_forwarded for g in self.groups.values()},
                "model_calls": {m.name: m.calls for m in self.models.values()}}

    def model(self, name: str) -> ServedModel:
        if name not in self.models:
            raise ServeError(f"unknown task {name!r}; served tasks: {', '.join(self.models)}")
        return self.models[name]

    # ------------------------------------------------------------- encoding
    def examples(self, name: str, items: Sequence[Mapping[str, Any] | str], max_chars: int | None = None,
                 where: str = "inputs") -> list[Example]:
        """Check raw inputs of model `name` and make them examples.

        Each item is a string (one text) or a mapping with the task's fields
        (`input_fields`) and optionally ``id``; every text must be a non-empty
        string of at most `max_chars` characters. Raises `ServeError`
        naming the item and field.
        """
        model = self.model(name)
        fields_ = model.fields
        what = name if name == model.task.name else f"{name} ({model.task.name})"
        out = []
        for i, item in enumerate(items):
            at = f"{where}[{i}]"
            if isinstance(item, str):
                item = {"text": item}
            if not isinstance(item, Mapping):
                raise ServeError(f"{at}: expected a string or an object with {', '.join(fields_)}, "
                                 f"got {type(item).__name__}")
            given = {k: v for k, v in item.items() if v is not None}
            extra = sorted(set(given) - set(fields_) - {"id"})
            if extra:
                raise ServeError(f"{at}: task {what} takes {', '.join(fields_)}; "
                                 f"unexpected {', '.join(extra)}")
            texts = []
            for f in fields_:
                if f not in given:
                    hint = " (the pair's second text)" if f == "text_pair" else ""
                    raise ServeError(f"{at}: task {what} needs {' and '.join(fields_)}; missing {f}{hint}")
                value = given[f]
                if not isinstance(value, str):
                    raise ServeError(f"{at}.{f}: must be a string, got {type(value).__name__}")
                if not value.strip():
                    raise ServeError(f"{at}.{f}: is empty")
                if max_chars is not None and len(value) > max_chars:
                    raise ServeError(f"{at}.{f}: {len(value)} characters, more than the limit of {max_chars}")
                texts.append(value)
            uid = given.get("id", str(i))
            if not isinstance(uid, str):
                raise ServeError(f"{at}.id: must be a string, got {type(uid).__name__}")
            words = ()
            if model.task.kind == "token_classification":  # the words to tag: the tokenizer's own split
                words = tuple(w for w, _ in model.featurizer.split_words(texts[0]))
                if not words:
                    raise ServeError(f"{at}.text: has no words")
            out.append(Example(uid=uid, texts=tuple(texts), words=words))
        return out

    def encode(self, name: str, examples: Sequence[Example]) -> Job:
        """Tokenize `examples` for model `name` (its store's featurizer)."""
        model = self.model(name)
        if not examples:
            raise ServeError(f"no inputs for task {name}")
        uids = [e.uid for e in examples]
        if len(set(uids)) != len(uids):
            raise ServeError(f"task {name}: duplicate input ids")
        try:
            features = model.featurizer.encode(model.task, examples, model.pair_mode)
        except (BertVisionError, ValueError) as err:
            raise ServeError(f"task {name}: {err}") from err
        return Job(model, list(examples), features)

    def encode_batches(self, name: str, examples: Sequence[Example], batch_size: int) -> list[Job]:
        """`encode` `examples` for model `name` in jobs of at most
        `batch_size` examples; a long-document model's also of at most
        `batch_size` windows (whole documents, `Job.split_windows`): one
        forward pass each, its memory bounded however long the texts."""
        return [part for b0 in range(0, len(examples), batch_size)
                for part in self.encode(name, examples[b0:b0 + batch_size]).split_windows(batch_size)]

    def encode_all(self, plan: Sequence[tuple[str, Sequence[Example]]]) -> list[Job]:
        """`encode` each ``(model name, examples)``; models whose featurizers
        would make the same rows (one tokenizer, the same settings and task
        shape) share one tokenization of the same examples."""
        done: dict = {}
        jobs = []
        for name, examples in plan:
            model = self.model(name)
            windowed = model.task.kind in PER_TOKEN_KINDS or model.windows
            cfg = model.featurizer.get_config()
            key = (id(model.featurizer.tokenizer), model.task.kind, len(model.fields), model.pair_mode,
                   tuple(sorted(cfg.items())) if windowed else cfg["max_seq_len"],
                   tuple((e.uid, e.texts) for e in examples))
            if key in done:
                jobs.append(Job(model, list(examples), done[key]))
            else:
                jobs.append(self.encode(name, examples))
                done[key] = jobs[-1].features
        return jobs

    # -------------------------------------------------------------- running
    def forward(self, jobs: Sequence[Job]) -> list:
        """Raw outputs of every job (logits ``[n, C]``, scores ``[n]``, or span
        logits per window), running each backbone group once."""
        outputs: list = [None] * len(jobs)
        by_group: dict[str, list[int]] = {}
        for i, job in enumerate(jobs):
            by_group.setdefault(job.model.group, []).append(i)
        with self._lock:
            for name, ids in by_group.items():
                for i, out in zip(ids, self.groups[name].run([jobs[i] for i in ids])):
                    outputs[i] = out
        return outputs

    def predictions(self, job: Job, output, split: str = "input", labels=None) -> Predictions:
        """A job's raw output as `Predictions` (what predict-from-a-store returns)."""
        model, f = job.model, job.features
        uids = job.uids
        if model.task.kind == "token_classification":
            width = np.asarray(output).shape[1]
            return Predictions.from_outputs(model.task, split, uids, [output], offsets=[f.word_ids[:, :width]],
                                            gold=_word_gold(job.examples), source=str(model.run_dir))
        if model.task.kind != "span":
            return Predictions.from_outputs(model.task, split, uids, [output], labels=labels,
                                            thresholds=model.results.thresholds, source=str(model.run_dir))
        width = np.asarray(output["start_logits"]).shape[1]
        gold = {e.uid: (e.texts[1], [] if e.is_impossible else [a.text for a in e.answers]) for e in job.examples}
        return Predictions.from_outputs(model.task, split, uids, [output], window_index=[f.window_index()],
                                        offsets=[f.offsets[:, :width]], gold=gold, source=str(model.run_dir))

    def format(self, job: Job, output) -> list[dict]:
        """One JSON-ready result per example of `job`."""
        model, task = job.model, job.model.task
        preds = self.predictions(job, output)
        out = []
        if task.kind == "token_classification":
            out = [tagged_result(e.texts[0], words, tags, scores)
                   for e, words, tags, scores in zip(job.examples, *preds.sentence_tags())]
        elif task.kind != "span":
            out = [{k: v for k, v in r.items() if k != "id"} for r in preds.records()]
        else:
            decoded = preds.decode(threshold=model.threshold)
            for e in job.examples:
                span = decoded.best_offsets.get(e.uid)
                answer = decoded.predictions[e.uid]
                best = None if span is None else {"text": decoded.best_text[e.uid], "start": span[0],
                                                  "end": span[1]}
                out.append({"answer": answer, "start": span[0] if answer else None,
                            "end": span[1] if answer else None,
                            "no_answer_probability": float(decoded.na_probs[e.uid]), "best_span": best})
        for e, result in zip(job.examples, out):
            result["id"] = e.uid
        return out

    def run(self, jobs: Sequence[Job]) -> list[list[dict]]:
        """Forward and format: one list of results per job."""
        return [self.format(job, out) for job, out in zip(jobs, self.forward(jobs))]

    def predict(self, inputs: Mapping[str, Sequence], max_chars: int | None = None) -> dict[str, list[dict]]:
        """``{task name: [input, ...]}`` -> ``{task name: [result, ...]}``, all
        tasks in one batch (one forward pass per backbone)."""
        jobs = self.encode_all([(name, self.examples(name, items, max_chars, f"inputs.{name}"))
                                for name, items in inputs.items()])
        return dict(zip(inputs, self.run(jobs)))

    def predict_examples(self, name: str, examples: Sequence[Example], split: str = "input",
                         batch_size: int = 64) -> Predictions:
        """`Predictions` of model `name` on task examples (e.g. a GLUE or SQuAD
        file read with `bertvision.data.readers.load_examples`), `batch_size` examples
        (and, for long documents, windows) per forward pass (`encode_batches`); labels kept for evaluation."""
        model = self.model(name)
        task = model.task
        examples = list(examples)
        if not examples:
            raise ServeError(f"no examples to predict for {name}")
        outputs, uids, windows, offsets, cut = [], [], [], [], 0
        for job in self.encode_batches(name, examples, batch_size):
            cut += job.cut_texts
            (out,) = self.forward([job])
            outputs.append(out)
            f = job.features
            uids += job.uids
            if task.kind == "span":
                windows.append(f.window_index())
                offsets.append(f.offsets[:, :np.asarray(out["start_logits"]).shape[1]])
            elif task.kind == "token_classification":
                offsets.append(f.word_ids[:, :np.asarray(out).shape[1]])
        if cut:
            print(model.cut_note(cut, len(examples)), file=sys.stderr, flush=True)
        if task.kind == "token_classification":
            return Predictions.from_outputs(task, split, uids, outputs, offsets=offsets,
                                            gold=_word_gold(examples), source=str(model.run_dir))
        if task.kind == "span":
            gold = {e.uid: (e.texts[1], [] if e.is_impossible else [a.text for a in e.answers]) for e in examples}
            return Predictions.from_outputs(task, split, uids, outputs, window_index=windows, offsets=offsets,
                                            gold=gold, source=str(model.run_dir))
        missing = {"classification": -1, "multi_label": [-1] * task.num_labels}.get(task.kind, math.nan)
        labels = [missing if e.label is None else e.label for e in examples]
        return Predictions.from_outputs(task, split, uids, outputs, labels=labels,
                                        thresholds=model.results.thresholds, source=str(model.run_dir))

    def warmup(self) -> None:
        """Trace every forward pass once (the first request then pays nothing)."""
        jobs = []
        for name, model in self.models.items():
            item = {"question": "What is this?", "context": "This is a warm-up text."} \
                if model.task.kind == "span" else {f: "a warm-up text" for f in model.fields}
            jobs.append(self.encode(name, self.examples(name, [item])))
        self.forward(jobs)
        for group in self.groups.values():
            group.forward_passes = group.rows_forwarded = 0
        for model in self.models.values():
            model.calls = 0


def _word_gold(examples: Sequence[Example]) -> dict:
    """Each example's ``(words, gold tags)`` (token classification)."""
    return {e.uid: (list(e.words), list(e.tags)) for e in examples}


def tagged_result(text: str, words: Sequence[str], tags: Sequence[str], scores: Sequence[float]) -> dict:
    """A token classification result: the entities with their type, text,
    character offsets into `text` and score (the mean probability of their
    words' tags), and every word's tag.

    >>> tagged_result("Ada met Babbage", ["Ada", "met", "Babbage"], ["B-PER", "O", "B-PER"], [0.9, 0.8, 0.7])["entities"][1]
    {'type': 'PER', 'text': 'Babbage', 'start': 8, 'end': 15, 'score': 0.7}
    """
    spans = word_spans(text, words)
    found = []
    for kind, first, last in entities(tags):
        start, end = spans[first][0], spans[last][1]
        found.append({"type": kind, "text": text[start:end], "start": start, "end": end,
                      "score": round(float(np.mean(scores[first:last + 1])), 6)})
    return {"entities": found, "words": list(words), "tags": list(tags)}


def predict_split(run_dir: str | os.PathLike, store: str | Store, split: str, batch_size: int = 256) -> Predictions:
    """A run's predictions of `split` of `store` (a path or an opened
    `Store`; what ``pipelines.predict
    --split`` writes): an adapter (fit) run reads the store's activations
    (`bertvision.inference.predict.predict_run`); a fine-tuning run reads
    the texts and labels extraction kept (``SPLIT.examples.jsonl``,
    `Store.task_examples`) and runs its own BERT on them, tokenized as it
    was trained (`Predictor.predict_examples`; multi-label at the run's
    thresholds).

    >>> predict_split(RUN, STORE, "dev").evaluate().keys()
    dict_keys(['accuracy'])
    """
    results = RunFolder(run_dir).results()
    if results.run_type != "finetune":
        return predict_run(run_dir, store, split, batch_size=batch_size)
    opened = store if isinstance(store, Store) else open_store(str(store))
    opened = opened.head(results.spec.label_column)  # the label column the run's head was trained on
    if opened.task_spec != results.spec:
        raise ServeError(f"{opened.path} holds task {opened.task_spec.name!r} ({opened.task_kind}); the run {run_dir} "
                         f"was fine-tuned on {results.spec.name!r} ({results.spec.kind})")
    predictor = Predictor.from_runs([str(run_dir)])
    (name,) = predictor.names
    return predictor.predict_examples(name, opened.task_examples(split), split=split, batch_size=batch_size)
