"""The tf.Example layout every stage agrees on.

Raw examples (ingest):        id bytes, label int64, image int64[784] in [0, 255]
Normalized examples (transform): id, label, image float[784] in [0, 1],
                                 plus noisy_image float[784] when noise.kind != none
Shards: <artifact>/Split-<split>/data-SSSSS-of-NNNNN.tfrecord.gz (GZIP TFRecords).
"""

ID = "id"
LABEL = "label"
IMAGE = "image"
NOISY_IMAGE = "noisy_image"

HEIGHT = WIDTH = 28
PIXELS = HEIGHT * WIDTH
NUM_CLASSES = 10
COMPRESSION = "GZIP"
SHARD_PATTERN = "data-*.tfrecord.gz"


def shard_name(index: int, count: int) -> str:
    return f"data-{index:05d}-of-{count:05d}.tfrecord.gz"
