"""The serving and ensembling settings the commands' parsers read: light
(no TensorFlow, no web framework), so that ``--help`` answers at once and
names its defaults from the one place they are kept."""

from __future__ import annotations

from dataclasses import dataclass, field

from bertvision.config import ConfigBase, check_choice, check_non_negative, check_positive, check_positive_int
from bertvision.errors import ServeError

__all__ = ["COMBINE_MODES", "LOG_LEVELS", "QUANTIZE", "ServeConfig"]

COMBINE_MODES = ("mean", "max")  # how an ensemble combines its members (bertvision.inference.ensemble)
QUANTIZE = ("int8",)  # pipelines.export --format onnx --quantize (bertvision.inference.export.export_onnx)
LOG_LEVELS = ("critical", "error", "warning", "info", "debug")


@dataclass
class ServeConfig(ConfigBase):
    """Everything ``pipelines.serve`` runs with (flags of the same names)."""

    runs: list = field(default_factory=list)  # run folders, "PATH" or "NAME=PATH"
    host: str = "127.0.0.1"
    port: int = 8080
    max_batch_size: int = 64  # model inputs (rows; SQuAD windows) per micro-batch
    max_wait_ms: float = 5.0  # how long the first request of a batch waits for others
    max_inputs: int = 32  # predictions per request (inputs x tasks)
    max_chars: int = 20_000  # characters per text
    max_body_bytes: int = 1 << 20
    jit_compile: bool = False
    shutdown_timeout_s: float = 30.0
    log_level: str = "info"

    error = ServeError

    def validate(self) -> None:
        if not self.runs:
            raise ServeError("--run is required: the run folder(s) to serve")
        for name in ("max_batch_size", "max_inputs", "max_chars", "max_body_bytes"):
            check_positive_int(name, getattr(self, name), ServeError)
        check_non_negative("max_wait_ms", self.max_wait_ms, ServeError)
        check_positive("shutdown_timeout_s", self.shutdown_timeout_s, ServeError)
        check_choice("log_level", self.log_level, LOG_LEVELS, ServeError)
        if isinstance(self.port, bool) or not isinstance(self.port, int) or not 0 <= self.port <= 65535:
            raise ServeError(f"--port must be in 0..65535, got {self.port!r}")
