"""The ``bertvision`` console script: one command, the pipelines as subcommands.

``bertvision SUBCOMMAND ARGS`` is ``python -m pipelines.SUBCOMMAND ARGS``
(``bertvision search`` is ``python -m tuning.search``); both stay the entry
points. ``bertvision SUBCOMMAND --help`` lists its flags.
"""

from __future__ import annotations

import importlib
import sys

# subcommand -> (module, one line for the overview)
SUBCOMMANDS = {
    "extract": ("pipelines.extract", "per-layer BERT activations into a store"),
    "fit": ("pipelines.fit", "train an adapter on a store into a run folder"),
    "predict": ("pipelines.predict", "a run's predictions for a store split, a file, or one text"),
    "finetune": ("pipelines.finetune", "fine-tune BERT itself (the baseline adapters are compared with)"),
    "ensemble": ("pipelines.ensemble", "combine runs' predictions"),
    "report": ("pipelines.report", "tables and charts from run and search folders"),
    "search": ("tuning.search", "KerasTuner search over adapters"),
    "serve": ("pipelines.serve", "an HTTP server for runs (extra: serve)"),
    "export": ("pipelines.export", "runs as one SavedModel or ONNX model"),
    "submit": ("pipelines.submit", "a GLUE submission folder"),
}


def usage() -> str:
    width = max(map(len, SUBCOMMANDS))
    lines = [f"  {name:<{width}}  {what}" for name, (_, what) in SUBCOMMANDS.items()]
    return "usage: bertvision SUBCOMMAND [ARGS] (bertvision SUBCOMMAND --help)\n\nsubcommands:\n" + "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return 0 if argv else 2
    name, rest = argv[0], argv[1:]
    if name not in SUBCOMMANDS:
        print(f"bertvision: unknown subcommand {name!r}; choose one of {', '.join(SUBCOMMANDS)}", file=sys.stderr)
        return 2
    module = importlib.import_module(SUBCOMMANDS[name][0])
    sys.argv = [f"bertvision {name}", *rest]  # what the subcommand records as its command line
    return module.main(rest)


if __name__ == "__main__":
    sys.exit(main())
