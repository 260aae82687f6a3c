"""The "stacked autoencoder" classifier: the trained encoder plus a softmax head,
fine-tuned end to end on the train split's labels and scored on test. Optional
(evaluate.finetune_epochs > 0); it works on a fresh copy of the model so the
evaluated and exported autoencoder is untouched.
"""

from __future__ import annotations

import keras
import numpy as np

from components import features as F


def finetune_accuracy(
    encoder: keras.Model,
    train: tuple,
    val: tuple,
    test: tuple,
    epochs: int,
    *,
    batch_size: int = 128,
    seed: int = 0,
) -> dict:
    """train, val, test: (images, labels) of each split."""
    (train_x, train_y), (val_x, val_y), (test_x, test_y) = train, val, test
    keras.utils.set_random_seed(seed)
    inputs = keras.Input(encoder.input_shape[1:])
    outputs = keras.layers.Dense(F.NUM_CLASSES, activation="softmax", dtype="float32")(
        encoder(inputs)
    )
    clf = keras.Model(inputs, outputs, name="stacked_ae_classifier")
    clf.compile(
        optimizer=keras.optimizers.Adam(1e-3),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    # small train sets still get ~20 steps per epoch
    batch_size = min(batch_size, max(16, len(train_x) // 20))
    clf.fit(
        train_x,
        train_y,
        validation_data=(val_x, val_y),
        epochs=epochs,
        batch_size=batch_size,
        verbose=0,
        callbacks=[keras.callbacks.EarlyStopping(patience=2, restore_best_weights=True)],
    )
    _, acc = clf.evaluate(test_x, np.asarray(test_y), batch_size=512, verbose=0)
    return {"finetune_accuracy": float(acc), "finetune_epochs": int(epochs)}
