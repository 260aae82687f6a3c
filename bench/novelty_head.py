"""Would a class head on the code help novelty detection? Leave-one-class-out, side by side:
the zoo's conv_dense (models.build) trained on the seen classes with loss BCE + lam x the
cross-entropy of a softmax head on its code, for each --lambdas value; lam 0 is the
product's unsupervised model, the baseline measured in the same invocation.

Per held-out class and lam, AUROC on the full test split (the held-out class's images are
the novelties) of:
  reconstruction  the product's score (components/scoring.py: BCE above pixel entropy)
  latent          the product's score (components/novelty: class-conditional Gaussians with
                  one Ledoit-Wolf covariance fitted on train codes, nearest class mean)
  msp             the head's 1 - max softmax (lam > 0 only)
  rec+lat         reconstruction and latent standardized on validation, averaged
  rec+lat+msp     the same with msp (lam > 0 only)
Every choice is made on train and validation; the test split's labels only say which
images are novel. This screens the idea outside the pipeline (numpy arrays, Keras' fit, no
checkpoints, no export): bench/novelty.py measures the product itself.

    .venv/bin/python bench/novelty_head.py --classes 0,9 --max-examples 5000 --epochs 1
    .venv/bin/python bench/novelty_head.py --max-examples 20000 --epochs 4 --lambdas 0,1
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

import _common

FMNIST = "/usr/share/datasets/fashion-mnist"
VALIDATION = 5000  # seen-class train images set aside for standardization
FIT = 10000  # train codes the latent density is fitted on (novelty.fit_examples' default)


def read_idx(directory: str, split: str):
    """A split as float32 images [n,28,28,1] in [0, 1] and int64 labels, read and checked
    by ingest's own IDX reader and normalized by transform's function."""
    import tempfile

    from components.ingest.sources import stage_idx
    from components.preprocessing import normalize

    with tempfile.TemporaryDirectory() as scratch:  # where gzipped files are unpacked
        staged = stage_idx(directory, split, scratch)
        pixels, labels = staged.read(0, staged.count)
    return normalize(pixels).reshape(-1, 28, 28, 1), labels


def auroc(scores, novel) -> float:
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(novel, scores))


def one_run(data, held_out: int, lam: float, args) -> dict:
    """Train one model without `held_out` and score the test split."""
    import keras
    import numpy as np

    import models
    from components import scoring
    from components.novelty.fit import density
    from components.novelty.scores import latent_distance

    (x_train, y_train), (x_test, y_test) = data
    seen = y_train != held_out
    x, y = x_train[seen], y_train[seen]
    order = np.random.default_rng(args.seed).permutation(len(x))
    val, fit = order[:VALIDATION], order[VALIDATION:]
    if args.max_examples:
        fit = fit[: args.max_examples]
    keras.utils.set_random_seed(args.seed)
    ae = models.build("conv_dense", latent_dim=args.latent_dim)
    inputs = keras.Input((28, 28, 1))
    code = ae.encoder(inputs)
    logits = keras.layers.Dense(10, name="class_head")(code)
    trainer = keras.Model(inputs, [ae.decoder(code), logits])
    trainer.compile(
        optimizer=keras.optimizers.Adam(args.learning_rate),
        loss=[
            "binary_crossentropy",
            keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        ],
        loss_weights=[1.0, lam],
    )
    t0 = time.perf_counter()
    trainer.fit(x[fit], [x[fit], y[fit]], batch_size=128, epochs=args.epochs, verbose=0)
    seconds = time.perf_counter() - t0
    outputs = keras.Model(inputs, [code, trainer.outputs[0], logits])

    def scores(images) -> dict:
        c, r, lg = outputs.predict(images, batch_size=1024, verbose=0)
        p = np.exp(lg - lg.max(axis=1, keepdims=True))
        return {
            "code": c,
            "reconstruction": np.asarray(scoring.score(ae, images, r)),
            "msp": 1.0 - (p / p.sum(axis=1, keepdims=True)).max(axis=1),
        }

    train = scores(x[fit][:FIT])
    whitening, means = density(train["code"].astype(np.float64), y[fit][:FIT])
    out = {}
    for name, images in (("validation", x[val]), ("test", x_test)):
        s = scores(images)
        s["latent"] = np.asarray(latent_distance(s["code"], whitening, means))
        out[name] = s
    novel = y_test == held_out

    def standardized(*names):
        v, t = out["validation"], out["test"]
        return sum((t[n] - v[n].mean()) / (v[n].std() or 1.0) for n in names) / len(names)

    row = {"class": held_out, "lambda": lam, "train_seconds": round(seconds, 1)}
    row["reconstruction"] = auroc(out["test"]["reconstruction"], novel)
    row["latent"] = auroc(out["test"]["latent"], novel)
    row["rec+lat"] = auroc(standardized("reconstruction", "latent"), novel)
    if lam > 0:
        row["msp"] = auroc(out["test"]["msp"], novel)
        row["rec+lat+msp"] = auroc(standardized("reconstruction", "latent", "msp"), novel)
    return row


def table(rows: list[dict], lambdas: list[float]) -> str:
    """Markdown: one row per held-out class, one column per (lam, score), then the means."""
    names = ("reconstruction", "latent", "rec+lat", "msp", "rec+lat+msp")
    cols = [(lam, n) for lam in lambdas for n in names if lam > 0 or n in names[:3]]
    head = "| held-out class | " + " | ".join(f"{n} (lam {lam:g})" for lam, n in cols) + " |"
    lines = [head, "|---|" + "---:|" * len(cols)]
    by = {(r["class"], r["lambda"]): r for r in rows}
    classes = sorted({r["class"] for r in rows})
    for c in classes:
        cells = [by.get((c, lam), {}).get(n) for lam, n in cols]
        lines.append(
            f"| {c} | " + " | ".join("" if v is None else f"{v:.3f}" for v in cells) + " |"
        )
    means = []
    for lam, n in cols:
        vals = [by[(c, lam)][n] for c in classes if (c, lam) in by and n in by[(c, lam)]]
        means.append(f"{statistics.mean(vals):.3f}" if vals else "")
    lines.append("| **mean** | " + " | ".join(means) + " |")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--idx", default=FMNIST, help="directory of the IDX files")
    ap.add_argument("--classes", default="0,1,2,3,4,5,6,7,8,9")
    ap.add_argument("--lambdas", default="0,1", help="cross-entropy weights; 0 = no head")
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--max-examples", type=int, default=20000, help="train images; 0 = all")
    ap.add_argument("--latent-dim", type=int, default=16)
    ap.add_argument("--learning-rate", type=float, default=5e-4)  # the conv_dense preset's
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="/tmp/novelty-head.json")
    args = ap.parse_args(argv)
    _common.quiet()
    data = (read_idx(args.idx, "train"), read_idx(args.idx, "test"))
    lambdas = [float(v) for v in args.lambdas.split(",")]
    rows = []
    for c in (int(v) for v in args.classes.split(",")):
        for lam in lambdas:
            rows.append(one_run(data, c, lam, args))
            print(
                json.dumps(
                    {k: round(v, 4) if isinstance(v, float) else v for k, v in rows[-1].items()}
                ),
                flush=True,
            )
            with open(args.out, "w") as f:
                json.dump(rows, f, indent=1)
    print(table(rows, lambdas))
    return 0


if __name__ == "__main__":
    sys.exit(main())
