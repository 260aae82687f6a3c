#!/usr/bin/env python3
"""The pipeline definition and its command line.

    python run_pipeline.py run [--config PRESET] [--set KEY=VALUE ...]
    python run_pipeline.py runs | show RUN_ID [--json]
    python run_pipeline.py train-worker --root ROOT --run-id ID [--config ...] [--set ...]

`train-worker` is a non-chief worker of a multi-worker fit (TF_CONFIG): it joins the
train stage of the chief's run ID and commits nothing (components/train/worker.py).

As in a TFX pipeline file, this is where the components are put together and wired; the
runner under pipeline/ is handed the list and knows no concrete component.
"""

import sys

# The specs are light (no TensorFlow, Keras or Beam): executors load when a stage runs.
from components.evaluate.component import EVALUATE
from components.export.component import EXPORT
from components.ingest.component import INGEST
from components.novelty.component import NOVELTY
from components.push.component import PUSH
from components.train.component import TRAIN
from components.transform.component import TRANSFORM
from components.validate.component import VALIDATE


def create_pipeline() -> list:
    """The components in order, each input wired to an upstream component's output (as
    TFX's `StatisticsGen(examples=example_gen.outputs["examples"])`): inserting a stage is
    one edit here plus its own folder under components/."""
    ingest = INGEST
    validate = VALIDATE.wire(examples=ingest.output("examples"))
    transform = TRANSFORM.wire(
        examples=ingest.output("examples"), raw_anomalies=validate.output("anomalies")
    )
    examples = transform.output("transformed_examples")
    train = TRAIN.wire(examples=examples)
    novelty = NOVELTY.wire(model=train.output("model"), examples=examples)
    scorer = novelty.output("scorer")
    evaluate = EVALUATE.wire(
        model=train.output("model"),
        model_run=train.output("model_run"),
        examples=examples,
        scorer=scorer,
    )
    export = EXPORT.wire(model=train.output("model"), examples=examples, scorer=scorer)
    push = PUSH.wire(
        model=train.output("model"),
        saved_model=export.output("saved_model"),
        blessing=evaluate.output("blessing"),
    )
    return [ingest, validate, transform, train, novelty, evaluate, export, push]


def main(argv=None) -> int:
    from pipeline.cli import main as cli_main

    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["train-worker"]:
        from components.train.worker import train_worker

        return train_worker(create_pipeline, argv[1:])

    return cli_main(create_pipeline, argv)


if __name__ == "__main__":
    sys.exit(main())
