"""Whole ``fit`` runs on scikit-learn's digits against scikit-learn's own MLPClassifier.

    python bench/fit_digits.py                          # writes bench/results/fit_digits.*
    python bench/fit_digits.py --baseline /tmp/before   # plus an earlier xpnet, interleaved
    python bench/fit_digits.py --quick                  # seconds, for the smoke test

The same problem for every variant: digits (8x8 images / 16, 10 classes), a 75/25 split
(random_state 0), a 64-128-10 ReLU MLP, batch 64, 60 epochs, no L2 penalty, shuffled
every epoch. Adam at lr 1e-3, and SGD at lr 0.01 with Nesterov momentum 0.9 (scikit-learn's
SGD defaults). Variants, timed whole and interleaved (A B C A B C ...): ``xn.mlp(...).fit``
on NumPy, the ``xpnet.sklearn.MLPClassifier`` estimator, ``sklearn.neural_network.
MLPClassifier`` with the same settings (no early stopping, tol 0, so it runs all 60
epochs) and, with ``--baseline``, the earlier xpnet's ``fit``. Reported: the median time of
``--reps`` runs (default 3), each variant's ratio to scikit-learn's time (median of the
per-round ratios, with their range) and the held-out accuracy.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import warnings

import common

SIZES, BATCH, EPOCHS = [64, 128, 10], 64, 60
QUICK_EPOCHS = 3
OPTIMIZERS = {"adam": {"lr": 1e-3}, "sgd": {"lr": 0.01, "momentum": 0.9, "nesterov": True}}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    common.add_common_args(parser)
    parser.add_argument("--baseline", default=None, metavar="DIR",
                        help="also run an earlier xpnet found as DIR/xpnet_before")
    return parser.parse_args(argv)


def digits():
    """(X_train, X_test, y_train, y_test) as float32 / int64, pixels scaled to [0, 1]."""
    import numpy as np
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    X, y = load_digits(return_X_y=True)
    X = (X / 16.0).astype(np.float32)
    return train_test_split(X, y.astype(np.int64), test_size=0.25, random_state=0)


def xpnet_run(pkg, opt_name, data, epochs):
    """``fit`` of ``pkg`` (this xpnet or the baseline): returns the held-out accuracy."""
    Xt, Xv, yt, yv = data
    settings = OPTIMIZERS[opt_name]
    opt = pkg.Adam(**settings) if opt_name == "adam" else pkg.SGD(**settings)
    model = pkg.mlp(SIZES, activation="relu", seed=0, backend="numpy")
    model.fit(Xt, yt, loss="cross_entropy", optimizer=opt, epochs=epochs, batch_size=BATCH,
              seed=0)
    return model.evaluate(Xv, yv, loss="cross_entropy")["accuracy"]


def _sklearn_kwargs(opt_name, epochs) -> dict:
    settings = OPTIMIZERS[opt_name]
    common_kw = dict(hidden_layer_sizes=(SIZES[1],), activation="relu", alpha=0.0,
                     batch_size=BATCH, max_iter=epochs, shuffle=True, random_state=0,
                     tol=0.0, n_iter_no_change=10**9, learning_rate_init=settings["lr"])
    if opt_name == "adam":
        return {**common_kw, "solver": "adam"}
    return {**common_kw, "solver": "sgd", "momentum": settings["momentum"],
            "nesterovs_momentum": settings["nesterov"]}


def estimator_run(cls, opt_name, data, epochs, **extra):
    """A scikit-learn-API estimator (scikit-learn's or xpnet's): held-out accuracy."""
    Xt, Xv, yt, yv = data
    clf = cls(**_sklearn_kwargs(opt_name, epochs), **extra)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ConvergenceWarning: 60 epochs is the point
        clf.fit(Xt, yt)
    return float((clf.predict(Xv) == yv).mean())


def variants(before, epochs):
    import sklearn.neural_network as skl

    import xpnet as xn
    from xpnet.sklearn import MLPClassifier

    out = []
    for opt_name in OPTIMIZERS:
        out.append((f"xpnet-fit-{opt_name}", opt_name,
                    lambda d, o=opt_name: xpnet_run(xn, o, d, epochs)))
        out.append((f"xpnet-MLPClassifier-{opt_name}", opt_name,
                    lambda d, o=opt_name: estimator_run(MLPClassifier, o, d, epochs,
                                                        backend="numpy", dtype="float32")))
        if before is not None:
            out.append((f"before-fit-{opt_name}", opt_name,
                        lambda d, o=opt_name: xpnet_run(before, o, d, epochs)))
        out.append((f"sklearn-MLPClassifier-{opt_name}", opt_name,
                    lambda d, o=opt_name: estimator_run(skl.MLPClassifier, o, d, epochs)))
    return out


def main(argv=None) -> int:
    args = parse_args(argv)
    threads = common.limit_threads(args.threads)
    import baseline

    before = baseline.load(args.baseline)
    epochs = QUICK_EPOCHS if args.quick else EPOCHS
    reps = args.reps or (1 if args.quick else 3)
    data = digits()
    runs = variants(before, epochs)
    for _, _, run in runs:  # warm-up: imports, caches, first allocations
        run(data)
    times = {name: [] for name, _, _ in runs}
    accuracy = {}
    for _ in range(reps):
        for name, _, run in runs:
            start = time.perf_counter()
            accuracy[name] = run(data)
            times[name].append(time.perf_counter() - start)
    rows = []
    for name, opt_name, _ in runs:
        ref = times[f"sklearn-MLPClassifier-{opt_name}"]
        per_round = [a / b for a, b in zip(times[name], ref, strict=True)]
        row = {"variant": name, "optimizer": opt_name, "median_s": statistics.median(times[name]),
               "samples_s": times[name], "vs_sklearn": statistics.median(per_round),
               "vs_sklearn_range": [min(per_round), max(per_round)],
               "accuracy": accuracy[name]}
        if before is not None and name.startswith("xpnet-fit"):
            old = times[f"before-fit-{opt_name}"]
            row["vs_before"] = statistics.median(a / b for a, b in zip(times[name], old,
                                                                       strict=True))
        rows.append(row)
        print(f"{name:34s} {common.fmt_time(row['median_s']):>10s}  vs sklearn "
              f"{row['vs_sklearn']:.2f}x ({per_round and min(per_round):.2f}-"
              f"{max(per_round):.2f})  accuracy {row['accuracy']:.4f}", flush=True)
    facts = common.machine_facts()
    facts["thread_limits"] = threads
    command = "python bench/fit_digits.py " + " ".join(argv if argv is not None else sys.argv[1:])
    payload = {"benchmark": "fit_digits", "quick": args.quick, "command": command.strip(),
               "config": {"sizes": SIZES, "batch": BATCH, "epochs": epochs, "reps": reps,
                          "optimizers": OPTIMIZERS},
               "machine": facts, "rows": rows}
    headers = ["variant", "median", "vs sklearn (range)", "vs before", "test accuracy"]
    table = [[r["variant"], common.fmt_time(r["median_s"]),
              f"{r['vs_sklearn']:.2f}x ({r['vs_sklearn_range'][0]:.2f}-"
              f"{r['vs_sklearn_range'][1]:.2f})",
              common.fmt_ratio(r.get("vs_before")), f"{r['accuracy']:.4f}"] for r in rows]
    md = (f"# fit_digits\n\n`{command.strip()}`\n\ndigits, {'-'.join(map(str, SIZES))} ReLU, "
          f"batch {BATCH}, {epochs} epochs, median of {reps} interleaved runs\n\n"
          + common.markdown_table(headers, table) + "\n\n" + common.facts_markdown(facts))
    name = "fit_digits_quick" if args.quick else "fit_digits"
    path = common.write_results(name, payload, md, args.out)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
