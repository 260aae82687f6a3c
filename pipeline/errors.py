"""Error classes and the process exit codes they map to.

Exit codes are the product's contract with schedulers (README.md, "Exit codes"):
  0 success; 2 invalid config or usage; 3 data rejected (missing, corrupt or anomalous
  input); 4 a stage failed for another reason; 74 the machine or the root failed (no
  space, a read-only filesystem, permission denied, a damaged metadata store; EX_IOERR);
  75 skipped because another run is active on the root (--skip-if-running, or `gc`
  refusing to run beside a live run; EX_TEMPFAIL, "try again later"); 130 interrupted
  (SIGINT or SIGTERM).
"""

from __future__ import annotations

import errno
import re

EXIT_OK = 0
EXIT_CONFIG = 2
EXIT_DATA = 3
EXIT_STAGE = 4
EXIT_ENVIRONMENT = 74
EXIT_SKIPPED = 75
EXIT_INTERRUPTED = 130


class PipelineError(Exception):
    """Base class: an error with a clear, one-line, user-facing message."""

    exit_code = EXIT_STAGE
    kind = "stage_failure"


class ConfigError(PipelineError):
    """A config key or value is wrong; the message names the key."""

    exit_code = EXIT_CONFIG
    kind = "invalid_config"


class DataError(PipelineError):
    """Input data is missing, corrupt, truncated or inconsistent; the message names the file."""

    exit_code = EXIT_DATA
    kind = "bad_data"


class DataAnomalyError(DataError):
    """TFDV found anomalies against the curated schema."""

    kind = "data_anomalies"


class StageError(PipelineError):
    """A stage could not run (missing upstream artifact, failed training, ...)."""

    exit_code = EXIT_STAGE
    kind = "stage_failure"


class EnvironmentFailure(PipelineError):
    """The machine or the root failed, not the data or the code: no space, a read-only
    filesystem, permission denied, a metadata store that cannot be used. The message
    names the path and the cause."""

    exit_code = EXIT_ENVIRONMENT
    kind = "environment"


class Interrupted(PipelineError):
    """SIGINT or SIGTERM: the run stops, its staged outputs are discarded."""

    exit_code = EXIT_INTERRUPTED
    kind = "interrupted"


INTERRUPTED = "interrupted (SIGINT or SIGTERM)"


class StopRun(KeyboardInterrupt):
    """Raised in the main thread by a helper thread that found the run cannot go on (its
    heartbeat cannot be written): unwinds like an interrupt, through Beam and TensorFlow,
    but is reported as its `reason`."""

    reason: PipelineError | None = None


ERROR_CLASSES = (
    PipelineError,
    ConfigError,
    DataError,
    DataAnomalyError,
    StageError,
    EnvironmentFailure,
    Interrupted,
)

# errno values that say the machine or the root failed, whatever the code was doing.
ENVIRONMENT_ERRNOS = {
    errno.ENOSPC: "no space left on device",
    errno.EDQUOT: "disk quota exceeded",
    errno.EROFS: "read-only file system",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
    errno.EFBIG: "file too large",
    errno.EIO: "input/output error",
}
# The same causes as libraries spell them when they wrap the OSError into their own
# exception (TensorFlow's OpError, h5py, Beam's RuntimeError, SQLite through ML Metadata).
_ENVIRONMENT_TEXT = re.compile(
    r"(No space left on device|Disk quota exceeded|Read-only file system|Permission denied"
    r"|File too large|errno = (28|30|13|27)\b|database disk image is malformed"
    r"|file is not a database|attempt to write a readonly database|disk I/O error"
    r"|database or disk is full)",
    re.IGNORECASE,
)
_PATH_IN_TEXT = re.compile(r"(?:'|\"|name = '|file: )(/[^'\",\s]+)")


def environment_failure(exc: BaseException, where: str = "?") -> EnvironmentFailure | None:
    """The EnvironmentFailure behind `exc` (itself, its causes or contexts), or None:
    an OSError with an environment errno, or a library error whose text names one.
    `where`: the path named when the error names none (a failed write's OSError has no
    file name): the caller's root."""
    seen: set[int] = set()
    e: BaseException | None = exc
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, EnvironmentFailure):
            return e
        if isinstance(e, OSError) and e.errno in ENVIRONMENT_ERRNOS:
            return EnvironmentFailure(
                f"{e.filename or where}: {ENVIRONMENT_ERRNOS[e.errno]} [Errno {e.errno}]"
            )
        text = str(getattr(e, "message", None) or e)
        if (m := _ENVIRONMENT_TEXT.search(text)) and not isinstance(e, PipelineError):
            path = _PATH_IN_TEXT.search(text)
            first = text.strip().splitlines()[0] if text.strip() else m.group(0)
            return EnvironmentFailure(
                f"{path.group(1) if path else where}: {m.group(0).lower()} "
                f"({type(e).__name__}: {first[:300]})"
            )
        e = e.__cause__ or e.__context__
    return None


def as_pipeline_error(exc: BaseException, where: str = "?") -> PipelineError:
    """The PipelineError any exception of a stage or a run stands for: a StopRun its
    reason, an interrupt Interrupted, an environment failure (a full disk is not bad data,
    whatever the code was reading) EnvironmentFailure, anything else not ours StageError.
    `where`: the path an environment failure names when the error itself names none."""
    if isinstance(exc, StopRun) and exc.reason is not None:
        return exc.reason
    if isinstance(exc, KeyboardInterrupt):
        return Interrupted(INTERRUPTED)
    if not isinstance(exc, (ConfigError, Interrupted)) and (env := environment_failure(exc, where)):
        return env
    if not isinstance(exc, PipelineError):
        return StageError(f"{type(exc).__name__}: {exc}")
    return exc


def describe(exc: BaseException, where: str = "?") -> dict:
    """kind, one-line message and exit code of `exc` (as_pipeline_error), as ML Metadata
    and summary.json record a failure."""
    error = as_pipeline_error(exc, where)
    return {"kind": error.kind, "message": str(error).strip(), "exit_code": error.exit_code}
