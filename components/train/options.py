"""The names train.optimizer and train.lr_schedule accept. The spec checks them and the
executor builds them; this module stays free of Keras so the spec imports it cheaply."""

OPTIMIZERS = ("adam", "rmsprop", "sgd")
LR_SCHEDULES = ("constant", "cosine")
