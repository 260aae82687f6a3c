"""What reaches the console: the pipeline's own log lines and nothing else.

Third-party start-up noise is silenced where it starts, before TensorFlow, Beam or TFDV
are imported: C++ logging through environment variables; Python warnings and the
libraries' own loggers into the run's pipeline.log (records from before the log file
exists are buffered and written to it once it does); text that libraries print to
stderr while they are imported, likewise. Warnings raised by this project's own code
still reach the console.
"""

from __future__ import annotations

import contextlib
import io
import logging
import logging.handlers
import os
import sys
import tempfile
import warnings

PROJECT_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUR_PACKAGES = ("pipeline", "components", "models")
QUIET_ENV = {
    "TF_CPP_MIN_LOG_LEVEL": "3",  # TF/XLA C++ logs (e.g. the CUDA factory registrations)
    "GRPC_VERBOSITY": "ERROR",
    "GLOG_minloglevel": "2",
}
CONSOLE_FORMAT = "%(asctime)s %(levelname)s %(message)s"
FILE_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

_buffer = logging.handlers.MemoryHandler(capacity=100_000, flushLevel=logging.CRITICAL + 1)
_console = logging.StreamHandler(sys.stderr)
_file: list[logging.Handler] = []  # the current run's log file (one run per process at a time)


def _ours(name: str) -> bool:
    return name.split(".")[0] == "pipeline"


def _show_warning(message, category, filename, lineno, file=None, line=None):
    text = warnings.formatwarning(message, category, filename, lineno, line).strip()
    ours = os.path.relpath(os.path.abspath(filename), PROJECT_ROOT).split(os.sep)[0] in OUR_PACKAGES
    logging.getLogger("pipeline.warnings" if ours else "py.warnings").warning(text)


def _log_unraisable(unraisable) -> None:
    logging.getLogger("py.unraisable").debug(
        "%s: %r",
        unraisable.err_msg or "Exception ignored",
        unraisable.object,
        exc_info=(unraisable.exc_type, unraisable.exc_value, unraisable.exc_traceback),
    )


def quiet_third_party(level: str = "INFO") -> None:
    """Call first, before any heavy import."""
    for k, v in QUIET_ENV.items():
        os.environ.setdefault(k, v)
    warnings.showwarning = _show_warning
    # A log file on a full disk must not print logging's own tracebacks on the console,
    # nor objects that fail while being freed (h5py's, TensorFlow's): both go to the log.
    logging.raiseExceptions = False
    sys.unraisablehook = _log_unraisable
    root = logging.getLogger()
    root.setLevel(logging.INFO)
    logging.getLogger("pipeline").setLevel(logging.DEBUG)
    _console.setFormatter(logging.Formatter(CONSOLE_FORMAT, "%H:%M:%S"))
    _console.setLevel(level.upper())
    _console.filters[:] = [lambda record: _ours(record.name)]
    _console.stream = sys.stderr  # the current one (pytest swaps it per test)
    _buffer.setTarget(None)
    for h in (_console, _buffer):
        if h not in root.handlers:
            root.addHandler(h)


def log_to_file(path: str) -> None:
    """Everything (ours at DEBUG, tracebacks included; third parties at INFO) into `path`,
    starting with what was buffered before it existed."""
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter(FILE_FORMAT, "%Y-%m-%d %H:%M:%S"))
    _buffer.setTarget(handler)
    _buffer.flush()
    root = logging.getLogger()
    root.removeHandler(_buffer)
    for old in _file:  # an earlier run in this process (tests call main() repeatedly)
        root.removeHandler(old)
        old.close()
    _file[:] = [handler]
    root.addHandler(handler)


@contextlib.contextmanager
def stderr_to_log(logger_name: str = "py.stderr"):
    """What Python code prints to stderr inside the block (import-time notices) goes to
    the log instead of the console."""
    captured = io.StringIO()
    with contextlib.redirect_stderr(captured):
        yield
    text = captured.getvalue().strip()
    if text:
        logging.getLogger(logger_name).info("%s", text)


@contextlib.contextmanager
def native_stderr_to_log(logger_name: str = "native.stderr"):
    """What native code writes to file descriptor 2 inside the block goes to the log
    instead of the console: TensorFlow Lite's converter logs through absl, which no
    environment variable silences ("All log messages before absl::InitializeLog() ...").
    Keep the block to the native call: the pipeline's own lines written in it would go to
    the log only."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            sink.seek(0)
            text = sink.read().decode(errors="replace").strip()
    if text:
        logging.getLogger(logger_name).info("%s", text)
