"""The tf.Example layout every stage agrees on.

Raw examples (ingest):        id bytes, label int64, image int64[784] in [0, 255]
Normalized examples (transform): id, label, image float[784] in [0, 1],
                                 plus noisy_image float[784] when noise.kind != none
Shards: <artifact>/Split-<split>/data-SSSSS-of-NNNNN.tfrecord.gz (GZIP TFRecords).
"""

import hashlib

ID = "id"
LABEL = "label"
IMAGE = "image"
NOISY_IMAGE = "noisy_image"

HEIGHT = WIDTH = 28
PIXELS = HEIGHT * WIDTH
NUM_CLASSES = 10
COMPRESSION = "GZIP"
SHARD_PATTERN = "data-*.tfrecord.gz"


def id_hash64(example_id: str) -> int:
    """A stable 64-bit hash of an example id: the key of the validation carve and of each
    example's noise, so both are independent of order, caps and workers."""
    return int.from_bytes(hashlib.sha256(example_id.encode()).digest()[:8], "big")


def shard_name(index: int, count: int) -> str:
    return f"data-{index:05d}-of-{count:05d}.tfrecord.gz"


# Class names per dataset, for every legend and table (the label is their index).
CLASS_NAMES = {
    "fashion_mnist": (
        "T-shirt/top",
        "Trouser",
        "Pullover",
        "Dress",
        "Coat",
        "Sandal",
        "Shirt",
        "Sneaker",
        "Bag",
        "Ankle boot",
    ),
    "mnist": tuple(str(d) for d in range(10)),
}
