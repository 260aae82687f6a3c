"""Pixel normalization, defined once: raw pixels 0..255 -> float32 in [0, 1].

Transform applies it to the raw examples ingest writes (numpy, in its Beam DoFn) and the
exported SavedModel applies it inside its graph (`serving_default` on raw tf.Examples,
`images_uint8`), so the model is served exactly the inputs it was trained on.

One computation for both: a float32 cast, then an IEEE float32 division by 255, correctly
rounded in numpy, in eager TensorFlow and in a traced graph alike, so the values are
bit-identical everywhere (tests/test_transform.py checks every pixel value, eager and in a
graph). The division is DivNoNan, not `x / 255.0`: in a traced graph Grappler's constant
folding rewrites a division by a constant into a multiplication by its reciprocal, which
is off by one ulp for 126 of the 256 pixel values. Grappler leaves DivNoNan alone, and with
a divisor of 255 it is plain division. Out-of-range values are divided too (510 -> 2.0),
for the normalized schema's check to catch.

Kept out of components/features.py, which the component specs import at plan time
without TensorFlow.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

PIXEL_MAX = 255.0


def normalize(pixels):
    """Pixels 0..255 of any integer (or float) dtype and any shape -> float32 pixels / 255.

    A numpy array in gives a numpy array out (transform); a tf.Tensor in (eager or
    symbolic, e.g. inside a SavedModel signature) gives a tf.Tensor out.
    """
    x = tf.math.divide_no_nan(tf.cast(pixels, tf.float32), tf.constant(PIXEL_MAX, tf.float32))
    return x.numpy() if isinstance(pixels, np.ndarray) else x
