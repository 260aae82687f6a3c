"""Artifacts: immutable directories, written under a temporary name and committed by
one rename, so a crashed stage leaves nothing that looks finished.

All paths go through tf.io.gfile, so artifacts could live on `gs://` (on object stores
the final rename is a copy, not atomic; the `_COMMITTED` marker, written last, is what
readers trust); the run state beside them is local today (README).
"""

from __future__ import annotations

import json
import posixpath
import uuid
from dataclasses import dataclass, field
from typing import Any

from tensorflow.io import gfile

COMMIT_MARKER = "_COMMITTED"
TMP_PREFIX = ".tmp-"

# Artifact types, named as TFX names them.
EXAMPLES = "Examples"
STATISTICS = "ExampleStatistics"
ANOMALIES = "ExampleAnomalies"
MODEL = "Model"
MODEL_RUN = "ModelRun"
EVALUATION = "ModelEvaluation"
SAVED_MODEL = "PushedModel"
EMBEDDINGS = "Embeddings"

SPLITS = ("train", "validation", "test")


@dataclass
class Artifact:
    type: str
    uri: str
    properties: dict[str, Any] = field(default_factory=dict)
    id: int | None = None  # ML Metadata artifact id, once registered

    def split_uri(self, split: str) -> str:
        """TFX's layout for split-aware artifacts: <uri>/Split-<split>/..."""
        return posixpath.join(self.uri, f"Split-{split}")

    def split_files(self, split: str, pattern: str = "*") -> list[str]:
        files = sorted(gfile.glob(posixpath.join(self.split_uri(split), pattern)))
        return files

    @property
    def splits(self) -> list[str]:
        return list(self.properties.get("splits", []))


def is_committed(uri: str) -> bool:
    return gfile.exists(posixpath.join(uri, COMMIT_MARKER))


def staging_uri(final_uri: str) -> str:
    parent, name = posixpath.split(final_uri.rstrip("/"))
    return posixpath.join(parent, f"{TMP_PREFIX}{name}-{uuid.uuid4().hex[:8]}")


def begin(final_uri: str) -> str:
    """Create and return an empty staging directory for an artifact."""
    if gfile.exists(final_uri):
        raise FileExistsError(f"artifact already exists, refusing to overwrite: {final_uri}")
    tmp = staging_uri(final_uri)
    gfile.makedirs(tmp)
    return tmp


def commit(tmp_uri: str, final_uri: str, properties: dict[str, Any]) -> None:
    """Write the artifact's properties and marker, then rename into place."""
    with gfile.GFile(posixpath.join(tmp_uri, "_artifact.json"), "w") as f:
        json.dump(properties, f, indent=2, sort_keys=True, default=str)
    with gfile.GFile(posixpath.join(tmp_uri, COMMIT_MARKER), "w") as f:
        f.write("")
    gfile.makedirs(posixpath.dirname(final_uri))
    gfile.rename(tmp_uri, final_uri, overwrite=False)


def discard(tmp_uri: str) -> None:
    if gfile.exists(tmp_uri):
        gfile.rmtree(tmp_uri)


def read_properties(uri: str) -> dict[str, Any]:
    path = posixpath.join(uri, "_artifact.json")
    if not gfile.exists(path):
        return {}
    with gfile.GFile(path) as f:
        return json.load(f)


def load(type_: str, uri: str) -> Artifact:
    """An existing committed artifact directory, e.g. for running a component alone."""
    if not is_committed(uri):
        raise FileNotFoundError(f"not a committed artifact (no {COMMIT_MARKER}): {uri}")
    return Artifact(type=type_, uri=uri, properties=read_properties(uri))
