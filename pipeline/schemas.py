"""Where the curated TFDV schemas live, and their digests (part of the cache key)."""

import hashlib
import pathlib

SCHEMA_DIR = pathlib.Path(__file__).resolve().parent.parent / "schemas"
RAW_SCHEMA = SCHEMA_DIR / "raw" / "schema.pbtxt"
NORMALIZED_SCHEMA = SCHEMA_DIR / "normalized" / "schema.pbtxt"


def schema_digest(path: pathlib.Path) -> str:
    return hashlib.sha256(pathlib.Path(path).read_bytes()).hexdigest()


def load_schema(path):
    """The schema proto; imported lazily because TFDV is heavy."""
    import tensorflow_data_validation as tfdv

    return tfdv.load_schema_text(str(path))
