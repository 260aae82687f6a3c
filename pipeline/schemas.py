"""The curated TFDV schemas (schemas/, reviewed like code). Parameters name them by their
path inside the project and carry their digest, so cache keys hold no absolute path."""

import hashlib
import pathlib

PROJECT_ROOT = pathlib.Path(__file__).resolve().parent.parent
RAW_SCHEMA = "schemas/raw/schema.pbtxt"
NORMALIZED_SCHEMA = "schemas/normalized/schema.pbtxt"


def schema_path(name: str) -> pathlib.Path:
    return PROJECT_ROOT / name


def schema_digest(name: str) -> str:
    return hashlib.sha256(schema_path(name).read_bytes()).hexdigest()


def load_schema(name: str):
    """The schema proto; imported lazily because TFDV is heavy."""
    import tensorflow_data_validation as tfdv

    return tfdv.load_schema_text(str(schema_path(name)))
