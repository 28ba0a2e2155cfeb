"""python -m pipelines.serve: serve trained runs over HTTP (JSON), micro-batched.

Examples::

    python -m pipelines.serve --run runs/sst2-pooler --run runs/mrpc-cnn --port 8080
    python -m pipelines.serve --run sentiment=runs/sst2-pooler --run runs/sst2-bert --host 0.0.0.0

    curl -s localhost:8080/v1/predict -H 'Content-Type: application/json' \\
        -d '{"inputs": {"sst2": ["a gorgeous film"], "mrpc": [{"text": "He left.", "text_pair": "He went away."}]}}'

Every adapter run trained on activations of the same backbone (sha256 of its
config and weights) shares one forward pass of it per batch; a fine-tuning run
runs its own BERT. A task is named after its task (``sst2``), or after its run
folder when two runs share a task, or ``NAME=PATH``. Endpoints:
``POST /v1/predict``, ``GET /v1/models``, ``GET /v1/stats``, ``GET /healthz``
(see ``bertvision.inference.server``). Binds to 127.0.0.1 unless ``--host`` says
otherwise. SIGTERM or Ctrl-C: requests in flight are answered, then the
process exits 0.
"""

from __future__ import annotations

import argparse
import signal
import sys

from pipelines._common import die, setup_env

setup_env()

from bertvision.extras import import_extra  # noqa: E402  (after setup_env)
from bertvision.inference.config import LOG_LEVELS, ServeConfig  # noqa: E402


def build_parser() -> argparse.ArgumentParser:
    d = ServeConfig(runs=["-"])
    p = argparse.ArgumentParser(prog="python -m pipelines.serve", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", action="append", dest="runs", required=True, metavar="[NAME=]RUN_DIR",
                   help="a run folder to serve (adapter fit run or fine-tuning run); repeat for more")
    p.add_argument("--host", default=d.host, help=f"address to bind (default {d.host}: this machine only)")
    p.add_argument("--port", type=int, default=d.port, help=f"default {d.port}")
    p.add_argument("--max-batch-size", type=int, default=d.max_batch_size,
                   help=f"model inputs per micro-batch (SQuAD: windows; default {d.max_batch_size})")
    p.add_argument("--max-wait-ms", type=float, default=d.max_wait_ms,
                   help=f"how long a batch waits for more requests after its first (default {d.max_wait_ms})")
    p.add_argument("--max-inputs", type=int, default=d.max_inputs,
                   help=f"predictions per request, inputs x tasks (default {d.max_inputs})")
    p.add_argument("--max-chars", type=int, default=d.max_chars, help=f"characters per text (default {d.max_chars})")
    p.add_argument("--max-body-bytes", type=int, default=d.max_body_bytes,
                   help=f"request body size limit (default {d.max_body_bytes})")
    p.add_argument("--shutdown-timeout", "--shutdown-timeout-s", type=float, default=d.shutdown_timeout_s,
                   dest="shutdown_timeout_s",
                   help=f"seconds to finish requests in flight on SIGTERM (default {d.shutdown_timeout_s:g})")
    p.add_argument("--jit", action="store_true", help="XLA-compile the forward passes (recompiles per batch shape)")
    p.add_argument("--log-level", choices=LOG_LEVELS, default=d.log_level)
    return p


def _exit_cleanly(signum, frame):  # after uvicorn's graceful shutdown it re-raises the signal
    sys.exit(0)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    with die.on_errors():
        config = ServeConfig(runs=args.runs, host=args.host, port=args.port, max_batch_size=args.max_batch_size,
                             max_wait_ms=args.max_wait_ms, max_inputs=args.max_inputs, max_chars=args.max_chars,
                             max_body_bytes=args.max_body_bytes, jit_compile=args.jit,
                             shutdown_timeout_s=args.shutdown_timeout_s, log_level=args.log_level)
        server = import_extra("bertvision.inference.server", "serve", "pipelines.serve (the HTTP server)")
        signal.signal(signal.SIGTERM, _exit_cleanly)
        signal.signal(signal.SIGINT, _exit_cleanly)
        server.serve(config)
    return 0


if __name__ == "__main__":
    sys.exit(main())
