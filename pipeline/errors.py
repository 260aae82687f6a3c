"""Error classes and the process exit codes they map to.

Exit codes are the product's contract with schedulers (README, "Exit codes"):
  0 success; 2 invalid config or usage; 3 data rejected (missing, corrupt or anomalous
  input); 4 a stage failed for another reason; 75 skipped because another run is active
  on the root (--skip-if-running, or `gc` refusing to run beside a live run; EX_TEMPFAIL,
  "try again later"); 130 interrupted
  (SIGINT or SIGTERM).
"""

EXIT_OK = 0
EXIT_CONFIG = 2
EXIT_DATA = 3
EXIT_STAGE = 4
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


class Interrupted(PipelineError):
    """SIGINT or SIGTERM: the run stops, its staged outputs are discarded."""

    exit_code = EXIT_INTERRUPTED
    kind = "interrupted"


ERROR_CLASSES = (PipelineError, ConfigError, DataError, DataAnomalyError, StageError, Interrupted)
