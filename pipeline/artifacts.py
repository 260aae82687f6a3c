"""Artifacts: immutable directories, written under a temporary name and committed by
one rename, so a crashed stage leaves nothing that looks finished.

Remote URIs (`gs://...`) go through tf.io.gfile (on object stores the final rename is a
copy, not atomic; the `_COMMITTED` marker, written last, is what readers trust); local
paths through the standard library, so that looking up the cache needs no TensorFlow
(a fully cached run never imports it). The run state beside them is local today (docs/scale-out.md).
"""

from __future__ import annotations

import glob
import json
import os
import posixpath
import shutil
import uuid
from dataclasses import dataclass, field
from typing import Any

COMMIT_MARKER = "_COMMITTED"
# Artifact property: paths outside the artifact that it stands for; the cache reuses the
# artifact only while they exist (pipeline/launcher.py, `usable`).
EXTERNAL_PATHS = "external_paths"
TMP_PREFIX = ".tmp-"
# Key of `_artifact.json` (not an artifact property): the execution that made it, for
# rebuilding ML Metadata from the files (pipeline/recovery.py).
EXECUTION_RECORD = "execution"
# Key of `_artifact.json` and of an ML Metadata artifact: which properties hold paths inside
# the root, stored relative to it (as the uri is) so a moved or copied root names its own files.
ROOT_RELATIVE = "root_relative_properties"

# Artifact types, named as TFX names them.
EXAMPLES = "Examples"
STATISTICS = "ExampleStatistics"
ANOMALIES = "ExampleAnomalies"
MODEL = "Model"
MODEL_RUN = "ModelRun"
EVALUATION = "ModelEvaluation"
BLESSING = "ModelBlessing"
SAVED_MODEL = "SavedModel"
EMBEDDINGS = "Embeddings"
SCORER = "NoveltyScorer"
PUSHED_MODEL = "PushedModel"

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
        pattern = posixpath.join(self.split_uri(split), pattern)
        return sorted(_gfile().glob(pattern) if _remote(pattern) else glob.glob(pattern))

    @property
    def splits(self) -> list[str]:
        return list(self.properties.get("splits", []))


def relative_uri(root: str, uri: str) -> str:
    """`uri` relative to the pipeline root (how ML Metadata and `_artifact.json` name
    artifacts, so a moved root keeps its lineage); others as they are."""
    prefix = root.rstrip("/") + "/"
    return uri[len(prefix) :] if uri.startswith(prefix) else uri


def absolute_uri(root: str, uri: str) -> str:
    """The inverse of relative_uri."""
    return uri if uri.startswith("/") or "://" in uri else posixpath.join(root, uri)


def relative_properties(root: str, properties: dict[str, Any]) -> dict[str, Any]:
    """`properties` as stored: each path inside the root (a string or a list of strings)
    relative to it, and those keys listed under ROOT_RELATIVE."""
    stored: dict[str, Any] = {}
    relative = []
    for k, v in properties.items():
        if isinstance(v, str):
            stored[k] = relative_uri(root, v)
        elif isinstance(v, list) and all(isinstance(x, str) for x in v):
            stored[k] = [relative_uri(root, x) for x in v]
        else:
            stored[k] = v
        if stored[k] != v:
            relative.append(k)
    if relative:
        stored[ROOT_RELATIVE] = relative
    return stored


def absolute_properties(root: str, stored: dict[str, Any]) -> dict[str, Any]:
    """The inverse of relative_properties: the keys under ROOT_RELATIVE made absolute again
    under `root` (records written before that key keep their absolute paths)."""
    properties = dict(stored)
    for k in properties.pop(ROOT_RELATIVE, ()):
        v = properties[k]
        properties[k] = (
            [absolute_uri(root, x) for x in v] if isinstance(v, list) else absolute_uri(root, v)
        )
    return properties


def _remote(uri: str) -> bool:
    return "://" in uri


def normalize_root(root: str) -> str:
    """A pipeline root as the run records, ML Metadata and the locks name it: a local path
    made absolute, a remote URI (`gs://...`) as given."""
    return root if _remote(root) else os.path.abspath(root)


def _gfile():
    from tensorflow.io import gfile

    return gfile


def exists(uri: str) -> bool:
    return _gfile().exists(uri) if _remote(uri) else os.path.exists(uri)


def is_committed(uri: str) -> bool:
    return exists(posixpath.join(uri, COMMIT_MARKER))


def staging_uri(final_uri: str) -> str:
    parent, name = posixpath.split(final_uri.rstrip("/"))
    return posixpath.join(parent, f"{TMP_PREFIX}{name}-{uuid.uuid4().hex[:8]}")


def begin(final_uri: str) -> str:
    """Create and return an empty staging directory for an artifact."""
    if exists(final_uri):
        raise FileExistsError(f"artifact already exists, refusing to overwrite: {final_uri}")
    tmp = staging_uri(final_uri)
    if _remote(tmp):
        _gfile().makedirs(tmp)
    else:
        os.makedirs(tmp)
    return tmp


def _write_text(path: str, text: str) -> None:
    with _gfile().GFile(path, "w") if _remote(path) else open(path, "w") as f:
        f.write(text)


def commit(tmp_uri: str, final_uri: str, properties: dict[str, Any]) -> None:
    """Write the artifact's properties and marker, then rename into place."""
    _write_text(
        posixpath.join(tmp_uri, "_artifact.json"),
        json.dumps(properties, indent=2, sort_keys=True, default=str),
    )
    _write_text(posixpath.join(tmp_uri, COMMIT_MARKER), "")
    if _remote(final_uri):
        _gfile().makedirs(posixpath.dirname(final_uri))
        _gfile().rename(tmp_uri, final_uri, overwrite=False)
        return
    os.makedirs(os.path.dirname(final_uri), exist_ok=True)
    if os.path.exists(final_uri):  # os.rename would replace an empty directory
        raise FileExistsError(f"artifact already exists, refusing to overwrite: {final_uri}")
    os.rename(tmp_uri, final_uri)


def discard(tmp_uri: str) -> None:
    if _remote(tmp_uri):
        if _gfile().exists(tmp_uri):
            _gfile().rmtree(tmp_uri)
    else:
        shutil.rmtree(tmp_uri, ignore_errors=True)


def read_record(uri: str, root: str) -> dict[str, Any]:
    """`_artifact.json`: the properties (paths inside the root absolute under `root`) and,
    under EXECUTION_RECORD, what made the artifact (absent for artifacts older than that
    key); {} without the file."""
    path = posixpath.join(uri, "_artifact.json")
    if not exists(path):
        return {}
    with _gfile().GFile(path) if _remote(path) else open(path) as f:
        return absolute_properties(root, json.load(f))


def load(type_: str, uri: str, root: str = "") -> Artifact:
    """An existing committed artifact directory, e.g. for running a component alone; its
    properties' paths inside the root are made absolute under `root` (the pipeline root it
    is in; "" for a directory written outside one, read as written)."""
    if not is_committed(uri):
        raise FileNotFoundError(f"not a committed artifact (no {COMMIT_MARKER}): {uri}")
    props = read_record(uri, root)
    props.pop(EXECUTION_RECORD, None)
    return Artifact(type=type_, uri=uri, properties=props)
