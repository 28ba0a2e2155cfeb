"""Extraction as an Apache Beam pipeline: the same store, on any Beam runner.

>>> result = run_pipeline(configs, ["--runner", "DirectRunner", "--direct_num_workers", "2",
...                                 "--direct_running_mode", "multi_processing"])  # doctest: +SKIP
>>> result.manifest["splits"]["train"]["num_records"]  # doctest: +SKIP

(not run here: a Beam pipeline starts workers; tests/test_beam.py runs it.)

``python -m pipelines.extract ... --runner RUNNER [runner options]`` runs
this. The launching process plans every split exactly as a local extraction
does (`bertvision.store.extract.Extractor.plan_split`: one shard plan, the plan and
examples files) and writes each split's shard jobs, one line of JSON per
shard, to ``SPLIT.jobs.jsonl`` in the store. The pipeline then:

1. reads the job files and spreads the shards over the workers (``Reshuffle``);
2. writes each shard with `bertvision.store.extract.ShardExtractor` (the one shard
   writer: length-sorted batches, deterministic records, atomic shards). Each
   worker process loads the backbone once (Beam's `Shared`) and checks it is
   the one the plan records (sha256 of config and weights). A shard already
   finished by an earlier run is kept if its checksum holds, else rewritten;
3. once every shard is written, finalizes the manifest
   (`bertvision.store.extract.finalize_splits`) and removes the job files.

A pipeline that fails, or is killed, and is run again with the same command
writes only the shards still missing, and every shard's bytes are those a
single-process extraction writes (`tests/test_beam_extract.py`). Workers must
reach the store (``gs://`` on Dataflow) and the backbone (a folder at the
same path inside their container, or a keras-hub preset name).
"""

from __future__ import annotations

import contextlib
import os
import re
from dataclasses import dataclass

import apache_beam as beam
from apache_beam.metrics import Metrics
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions, WorkerOptions
from apache_beam.runners.runner import PipelineState, create_runner
from apache_beam.utils.shared import Shared

from bertvision import io
from bertvision.store import format as st
from bertvision.models.backbone import backbone_identity, backbone_layers, load_backbone, load_tokenizer, resolve_backbone
from bertvision.errors import BertVisionError, ConfigError, StoreError
from bertvision.store.extract import (JOBS_SUFFIX, ExtractConfig, Extractor, ShardExtractor, ShardJob, finalize_splits,
                                make_forward, split_lock)

__all__ = ["BeamResult", "ExtractShards", "pipeline_options", "run_pipeline"]

NAMESPACE = "bertvision"  # of the pipeline's counters
# ExtractConfig fields that may differ between the splits of one pipeline
_PER_SPLIT = ("split", "command", "progress")


def pipeline_options(args: list[str]) -> PipelineOptions:
    """Beam `PipelineOptions` from command-line flags; unknown options are
    refused (Beam itself only warns); the SDK workers log errors only (their
    warnings are Beam's start-up chatter) unless
    ``--default_sdk_harness_log_level`` says otherwise."""
    options = PipelineOptions(args)
    known = options.get_all_options()
    unknown = sorted(set(options.get_all_options(retain_unknown_options=True)) - set(known))
    if unknown:
        raise ConfigError(f"unknown Beam pipeline option(s) {', '.join('--' + u for u in unknown)}")
    runner = options.view_as(StandardOptions).runner
    if not runner:
        raise ConfigError("--runner is needed to run extraction as a Beam pipeline (e.g. --runner DirectRunner)")
    try:
        create_runner(runner)
    except ValueError as err:
        raise ConfigError(f"--runner {runner}: {str(err).splitlines()[0]}") from err
    worker = options.view_as(WorkerOptions)
    if worker.default_sdk_harness_log_level is None:
        worker.default_sdk_harness_log_level = "ERROR"
    return options


class _Worker:
    """What a worker process holds once for all its shards (through Beam's
    `Shared`): the backbone's forward pass and the featurizer."""

    def __init__(self, config: dict, identity: dict):
        c = ExtractConfig.from_dict(config)
        ref = resolve_backbone(c.backbone)
        here = backbone_identity(ref)
        for key in ("config_sha256", "weights_sha256"):
            if here.get(key) != identity.get(key):
                raise StoreError(f"backbone {c.backbone or ref.name} on this worker ({ref.path}) is not the one the "
                                 f"plan was made with ({key} differs); give workers the same backbone")
        backbone = load_backbone(ref)
        forward = make_forward(backbone, backbone_layers(c.layers, backbone.num_layers), c)
        self.shards = ShardExtractor(c, load_tokenizer(ref), forward)


class ExtractShards(beam.DoFn):
    """A `ShardJob` (a line of JSON) in, its shard written to the store; emits
    the job's split. The backbone is loaded once per worker process."""

    def __init__(self, config: dict, identity: dict):
        self._config, self._identity = config, identity
        self._shared = Shared()
        self._written = Metrics.counter(NAMESPACE, "shards_written")
        self._kept = Metrics.counter(NAMESPACE, "shards_kept")
        self._records = Metrics.counter(NAMESPACE, "records_written")

    def setup(self):
        self._worker = self._shared.acquire(lambda: _Worker(self._config, self._identity), tag=repr(self._config))

    def process(self, line: str):
        job = ShardJob.from_json(line)
        out = self._config["out"]
        info = st.finished_shard(out, job.name)
        if info is not None and io.sha256_file(io.join(out, job.name)) == info["sha256"]:
            self._kept.inc()
        else:  # a missing, unfinished or damaged shard
            self._worker.shards.write_shard(job)
            self._written.inc()
            self._records.inc(job.records)
        yield job.split


def _finalize(count: int, out: str, splits: list[str]) -> int:
    finalize_splits(out, splits, verify=False)  # every shard was just written or verified by ExtractShards
    return count


@dataclass
class BeamResult:
    """What `run_pipeline` returns: the store's manifest, the pipeline's
    final state and its counters (``shards_written``, ``shards_kept``,
    ``records_written``)."""

    manifest: dict
    state: str
    runner: str
    counters: dict

    def summary(self) -> str:
        c = self.counters
        return (f"Beam {self.runner}: {c.get('shards_written', 0)} shard(s) written "
                f"({c.get('records_written', 0)} records), {c.get('shards_kept', 0)} kept from an earlier run")


def _counters(result) -> dict:
    try:
        query = result.metrics().query(MetricsFilter().with_namespace(NAMESPACE))
    except Exception:  # a runner without metrics support
        return {}
    return {c.key.metric.name: int(c.committed if c.committed is not None else c.attempted)
            for c in query["counters"]}


def _user_error(err: Exception) -> BertVisionError | None:
    """A BertVision error raised on a worker, as Beam reports it in the driver."""
    found = re.findall(r"bertvision\.errors\.(\w+Error): (.+)", str(err))
    if not found:
        return None
    from bertvision import errors

    name, message = found[-1]
    return getattr(errors, name, StoreError)(message.strip())


def run_pipeline(configs: list[ExtractConfig], beam_args: list[str], loaded: dict | None = None) -> BeamResult:
    """Extract the splits `configs` name (one store, same settings) with a
    Beam pipeline configured by `beam_args` (``--runner`` and the runner's
    options). Plans on this machine, extracts and finalizes in the pipeline;
    returns when the pipeline is done. `loaded`: a user task's examples by
    split (`bertvision.data.files.read_source`)."""
    options = pipeline_options(beam_args)
    first = configs[0]
    shared = {k: v for k, v in first.to_dict().items() if k not in _PER_SPLIT}
    for c in configs[1:]:
        other = {k: v for k, v in c.to_dict().items() if k not in _PER_SPLIT}
        if other != shared:
            raise ConfigError("the splits of one Beam extraction must share every setting but the split")
    worker_config = first.replace(progress=False, command=[]).to_dict()
    splits = [c.split for c in configs]
    ref = resolve_backbone(first.backbone)
    backbone, tokenizer = load_backbone(ref), load_tokenizer(ref)
    # local workers (DirectRunner, a local Flink or Spark) import bertvision from here
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    if root not in os.environ.get("PYTHONPATH", "").split(os.pathsep):
        os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p)
    with contextlib.ExitStack() as locks:
        for c in configs:
            Extractor(c).check_out()
            locks.enter_context(io.exclusive_lock(c.out, f"extracting {c.split} (Beam)", StoreError,
                                                  name=split_lock(c.split)))
        job_files, identity = {}, None
        for c in configs:
            extractor = Extractor(c, backbone=backbone, tokenizer=tokenizer, loaded=(loaded or {}).get(c.split))
            jobs = extractor.plan_split()
            identity = extractor.spec.backbone
            job_files[c.split] = io.join(c.out, c.split + JOBS_SUFFIX)
            io.atomic_write_text(job_files[c.split], "".join(job.to_json() + "\n" for job in jobs))
        pipeline = beam.Pipeline(options=options)
        reads = [pipeline | f"Read {split} jobs" >> beam.io.ReadFromText(path) for split, path in job_files.items()]
        _ = (reads | "All jobs" >> beam.Flatten()
             | "Spread shards" >> beam.Reshuffle()
             | "Extract shards" >> beam.ParDo(ExtractShards(worker_config, identity))
             | "Wait for every shard" >> beam.combiners.Count.Globally()
             | "Finalize the manifest" >> beam.Map(_finalize, first.out, splits))
        try:
            result = pipeline.run()
            state = result.wait_until_finish()
        except Exception as err:
            user = _user_error(err)
            if user is not None:
                raise user from err
            raise
        if state != PipelineState.DONE:
            raise StoreError(f"the Beam pipeline ended {state}; run the same command again to resume "
                             "(finished shards are kept)")
    manifest = io.read_json(io.join(first.out, st.MANIFEST), StoreError)
    return BeamResult(manifest=manifest, state=str(state), runner=options.view_as(StandardOptions).runner,
                      counters=_counters(result))
