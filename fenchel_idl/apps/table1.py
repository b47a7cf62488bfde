"""The Table 1 command: the attacks of section 7.3 on feedforward networks trained on MNIST
and Fashion-MNIST.

    python -m fenchel_idl.apps.table1 --out DIR [--quick]
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path
from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray

from fenchel_idl.model.implicit_model import ImplicitModel
from fenchel_idl.analysis.attacks import (attack_table, lp_attack, save_attack_figure,
                                          sensitivity_attack)

Array = NDArray[np.float64]


# ------------------------------------------------------------------------------------------
# command line: python -m fenchel_idl.analysis.attacks --out DIR [--quick]
# ------------------------------------------------------------------------------------------

def _train(ds_train: Any, hidden: tuple[int, ...], max_iter: int, seed: int) -> Any:
    from sklearn.exceptions import ConvergenceWarning as SkConvergenceWarning
    from sklearn.neural_network import MLPClassifier

    mlp = MLPClassifier(hidden_layer_sizes=hidden, activation="relu", max_iter=max_iter,
                        random_state=seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SkConvergenceWarning)
        mlp.fit(ds_train.X_rows, ds_train.y_rows)
    return mlp


def main(argv: Sequence[str] | None = None) -> int:
    """Run the attacks of section 7.3 on MNIST and Fashion-MNIST; see the module docstring."""
    parser = argparse.ArgumentParser(
        prog="python -m fenchel_idl.analysis.attacks",
        description="Section 7.3: sensitivity, gradient and LP attacks on feedforward ReLU "
                    "networks (scikit-learn MLPClassifier) as implicit models.")
    parser.add_argument("--out", required=True, help="output directory")
    parser.add_argument("--quick", action="store_true",
                        help="small subsets and a small network (a smoke test)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--n-train", type=int, default=None,
                        help="training images per data set (default: 20000, quick: 2000)")
    parser.add_argument("--n-test", type=int, default=None,
                        help="test images per data set (default: 10000, quick: 200)")
    parser.add_argument("--lp-images", type=int, default=None,
                        help="images attacked by the LP per data set (default 3, quick 1)")
    parser.add_argument("--relaxation", choices=("paper", "triangle"), default="paper",
                        help="LP relaxation (see fenchel_idl.lp_bound)")
    args = parser.parse_args(argv)
    from fenchel_idl.problem import datasets as _datasets
    from fenchel_idl.model.feedforward import from_mlp

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    quick = args.quick
    n_train = args.n_train if args.n_train is not None else (2000 if quick else 20000)
    n_test = args.n_test if args.n_test is not None else (200 if quick else None)
    n_lp = args.lp_images if args.lp_images is not None else (1 if quick else 3)
    hidden = (64,) if quick else (256,)
    max_iter = 30 if quick else 15
    loaders = {"MNIST": _datasets.load_mnist, "Fashion-MNIST": _datasets.load_fashion_mnist}
    t_start = time.time()
    data: dict[str, tuple[ImplicitModel, Array, Array]] = {}
    shapes: dict[str, tuple[int, ...]] = {}
    lines = ["# Adversarial attacks on implicit models (section 7.3)", ""]
    for name, load in loaders.items():
        train = load("train", n=n_train, seed=args.seed)
        test = load("test", n=n_test, seed=args.seed)
        t0 = time.time()
        mlp = _train(train, hidden, max_iter, args.seed)
        model = from_mlp(mlp)
        logits = model.predict(test.U)
        agree = float(np.mean(np.argmax(logits, axis=0) == mlp.predict(test.X_rows)))
        lines.append(f"- {name}: MLPClassifier{hidden} (ReLU), {train.m} training images, "
                     f"trained in {time.time() - t0:.1f} s; implicit model n = {model.n}, "
                     f"p = {model.p}, q = {model.q}; agrees with scikit-learn on "
                     f"{100 * agree:.2f}% of {test.m} test images.")
        data[name] = (model, np.asarray(test.U), np.asarray(test.labels))
        shapes[name] = tuple(test.image_shape or (28, 28))
        print(f"[attacks] {name}: trained in {time.time() - t0:.1f} s", flush=True)
    table = attack_table(data, seed=args.seed)
    lines += ["", "## Table 1 layout: attack success rate vs share of perturbed inputs", "",
              table.to_markdown()]
    print(table.to_markdown(), flush=True)
    rng = np.random.default_rng(args.seed)
    for name, (model, U, labels) in data.items():
        slug = name.lower().replace("-", "_")
        ok = np.flatnonzero(np.argmax(model.predict(U), axis=0) == labels)[:5]
        # Figure 9: sparse sensitivity attack (10% of the pixels) on correctly classified images
        res = sensitivity_attack(model, U[:, ok], 1.0, fraction=0.1, input_range=(0.0, 1.0),
                                 seed=rng)
        pred = np.argmax(model.predict(res.U), axis=0)
        save_attack_figure(U[:, ok], res.U, out / f"{slug}_sensitivity_attack.png",
                           image_shape=shapes[name],
                           captions_clean=[f"label {labels[i]}" for i in ok],
                           captions_adv=[f"predicted {p}" for p in pred],
                           title=f"{name}: sensitivity attack, {res.k} pixels set to random "
                                 "values")
        # Figures 10-11: LP attacks, dense (small box) and sparse (k pixels, full range)
        lp_idx = ok[:n_lp]
        lines += ["", f"## LP attacks on {name} (Theorem 4.3, relaxation={args.relaxation})",
                  "", ("| image | label | attack | set | certified bound on max margin | "
                       "true margin y_t - y_label | prediction after |"),
                  "|---|---|---|---|---|---|---|"]
        flipped = 0
        for kind, sig, kk in (("dense", 0.1, None), ("sparse", 1.0, 20)):
            t0 = time.time()
            res = lp_attack(model, U[:, lp_idx], sig, target="any", labels=labels[lp_idx],
                            k=kk, input_range=(0.0, 1.0), relaxation=args.relaxation)
            pred = np.argmax(model.predict(res.U), axis=0)
            flipped += int(np.sum(pred != labels[lp_idx]))
            for j, i in enumerate(lp_idx):
                rec = res.lp[j]
                where = f"|u - u0| <= {sig:g}" + ("" if kk is None else f", card <= {kk}")
                cell = where.replace("|", "\\|")  # a literal bar inside a markdown cell
                lines.append(f"| {i} | {labels[i]} | {kind} | {cell} | {rec.bound:.3f} | "
                             f"{rec.value:.3f} | {pred[j]} |")
            save_attack_figure(U[:, lp_idx], res.U, out / f"{slug}_lp_{kind}_attack.png",
                               image_shape=shapes[name],
                               captions_clean=[f"label {labels[i]}" for i in lp_idx],
                               captions_adv=[f"predicted {p}" for p in pred],
                               title=f"{name}: {kind} LP attack ({where})")
            print(f"[attacks] {name}: {kind} LP attack on {len(lp_idx)} images in "
                  f"{time.time() - t0:.1f} s", flush=True)
        lines += ["", (f"The LP attacks changed the prediction of {flipped} of "
                       f"{2 * len(lp_idx)} correctly classified images.")]
    lines += ["", f"Total time {time.time() - t_start:.1f} s. Command: python -m "
              f"fenchel_idl.analysis.attacks --out {args.out}" + (" --quick" if quick else "")]
    (out / "attack_table.md").write_text("\n".join(lines) + "\n")
    print(f"[attacks] wrote {out / 'attack_table.md'}", flush=True)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
