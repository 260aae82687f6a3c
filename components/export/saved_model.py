"""The exported SavedModel: a trained model-zoo autoencoder behind four signatures.

    encode           images float32 [None,28,28,1]  -> {"code": [None, latent]}
    decode           code float32 [None, latent]    -> {"images": [None,28,28,1]}
    reconstruct      images float32 [None,28,28,1]  -> {"reconstruction": [None,28,28,1]}
    serving_default  examples string [None] (serialized tf.Example with `image` float[784]
                     in [0,1], as transform writes them)
                     -> {"reconstruction": [None,28,28,1], "code": [None, latent]}

Loads with plain TensorFlow, no project code needed:

    loaded = tf.saved_model.load(path)
    loaded.signatures["reconstruct"](images=x)["reconstruction"]
"""

from __future__ import annotations

import keras
import tensorflow as tf

from components import features as F

SIGNATURES = ("encode", "decode", "reconstruct", "serving_default")


def export(model, path: str) -> None:
    latent = int(model.latent_dim)
    images_spec = tf.TensorSpec([None, F.HEIGHT, F.WIDTH, 1], tf.float32, name="images")
    code_spec = tf.TensorSpec([None, latent], tf.float32, name="code")
    examples_spec = tf.TensorSpec([None], tf.string, name="examples")
    parse_spec = {F.IMAGE: tf.io.FixedLenFeature([F.PIXELS], tf.float32)}

    def encode(images):
        return {"code": tf.cast(model.encode(images), tf.float32)}

    def decode(code):
        return {"images": tf.cast(model.decode(code), tf.float32)}

    def reconstruct(images):
        return {"reconstruction": tf.cast(model.reconstruct(images), tf.float32)}

    def serve(examples):
        parsed = tf.io.parse_example(examples, parse_spec)
        images = tf.reshape(parsed[F.IMAGE], [-1, F.HEIGHT, F.WIDTH, 1])
        code = model.encode(images)
        return {"reconstruction": tf.cast(model.decode(code), tf.float32),
                "code": tf.cast(code, tf.float32)}

    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint("encode", encode, input_signature=[images_spec])
    archive.add_endpoint("decode", decode, input_signature=[code_spec])
    archive.add_endpoint("reconstruct", reconstruct, input_signature=[images_spec])
    archive.add_endpoint("serving_default", serve, input_signature=[examples_spec])
    archive.write_out(path, verbose=False)
