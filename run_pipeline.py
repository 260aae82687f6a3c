#!/usr/bin/env python3
"""The pipeline definition and its command line.

    python run_pipeline.py run [--config PRESET] [--set KEY=VALUE ...]
    python run_pipeline.py runs | show RUN_ID [--json]

As in a TFX pipeline file, this is where the components are put together; the runner
under pipeline/ is handed the list and knows no concrete component.
"""

import sys


def create_pipeline() -> list:
    """The components in order; each consumes only outputs of earlier ones."""
    from components.evaluate.component import EVALUATE
    from components.export.component import EXPORT
    from components.ingest.component import INGEST
    from components.push.component import PUSH
    from components.train.component import TRAIN
    from components.transform.component import TRANSFORM
    from components.validate.component import VALIDATE

    return [INGEST, VALIDATE, TRANSFORM, TRAIN, EVALUATE, EXPORT, PUSH]


def main(argv=None) -> int:
    from pipeline.cli import main as cli_main

    return cli_main(create_pipeline, argv)


if __name__ == "__main__":
    sys.exit(main())
