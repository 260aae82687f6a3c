"""Error classes and the process exit codes they map to.

Exit codes are part of the product's contract with schedulers (see README):
  0 success, 2 invalid config or usage, 3 data rejected (corrupt input or
  validation anomalies), 4 a stage failed for another reason, 130 interrupted.
"""

EXIT_OK = 0
EXIT_CONFIG = 2
EXIT_DATA = 3
EXIT_STAGE = 4
EXIT_INTERRUPTED = 130


class PipelineError(Exception):
    """Base class: an error with a clear, user-facing message."""

    exit_code = EXIT_STAGE
    kind = "stage_failure"


class ConfigError(PipelineError):
    """A config key or value is wrong; the message names the key."""

    exit_code = EXIT_CONFIG
    kind = "invalid_config"


class DataError(PipelineError):
    """Input data is corrupt, truncated or inconsistent; the message names the file."""

    exit_code = EXIT_DATA
    kind = "bad_data"


class DataAnomalyError(DataError):
    """TFDV found anomalies against the curated schema."""

    kind = "data_anomalies"


class StageError(PipelineError):
    """A stage could not run (missing upstream artifact, failed training, ...)."""

    exit_code = EXIT_STAGE
    kind = "stage_failure"


KIND_TO_EXIT = {
    cls.kind: cls.exit_code
    for cls in (PipelineError, ConfigError, DataError, DataAnomalyError, StageError)
}
