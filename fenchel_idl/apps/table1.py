"""The Table 1 command: the attacks of section 7.3 on feedforward networks trained on MNIST
and Fashion-MNIST, as implicit models.

    python -m fenchel_idl.apps.table1 --out DIR [--quick]

For each data set: a scikit-learn ReLU MLP, converted with :func:`fenchel_idl.from_mlp`;
the attack success rates against the share of perturbed inputs (Table 1 layout); the
sparse sensitivity attack of Figure 9; and the dense and sparse LP attacks of Figures 10-11
(Theorem 4.3). Writes ``attack_table.md`` and the figures into ``DIR``.
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from fenchel_idl.analysis import attack_table, lp_attack, save_attack_figure, sensitivity_attack
from fenchel_idl.model import ImplicitModel, from_mlp
from fenchel_idl.problem import datasets

__all__ = ["main"]

Array = NDArray[np.float64]

_PROG = "python -m fenchel_idl.apps.table1"


@dataclass(frozen=True)
class _Sizes:
    """The sizes of a run: images per set, LP-attacked images, network and Adam epochs."""

    n_train: int
    n_test: int | None
    n_lp: int
    hidden: tuple[int, ...]
    max_iter: int


@dataclass
class _Set:
    """One data set as an implicit model with its test images."""

    model: ImplicitModel
    U: Array
    labels: Array
    shape: tuple[int, ...]


def _parser(prog: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog,
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
    return parser


def _sizes(args: argparse.Namespace) -> _Sizes:
    quick = args.quick
    return _Sizes(
        n_train=args.n_train if args.n_train is not None else (2000 if quick else 20000),
        n_test=args.n_test if args.n_test is not None else (200 if quick else None),
        n_lp=args.lp_images if args.lp_images is not None else (1 if quick else 3),
        hidden=(64,) if quick else (256,), max_iter=30 if quick else 15)


def _train(ds_train: Any, hidden: tuple[int, ...], max_iter: int, seed: int) -> Any:
    from sklearn.exceptions import ConvergenceWarning as SkConvergenceWarning
    from sklearn.neural_network import MLPClassifier

    mlp = MLPClassifier(hidden_layer_sizes=hidden, activation="relu", max_iter=max_iter,
                        random_state=seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SkConvergenceWarning)
        mlp.fit(ds_train.X_rows, ds_train.y_rows)
    return mlp


def _train_sets(sizes: _Sizes, seed: int, lines: list[str]) -> dict[str, _Set]:
    """Train an MLP on each image set and convert it; one report line per set."""
    loaders = {"MNIST": datasets.load_mnist, "Fashion-MNIST": datasets.load_fashion_mnist}
    data: dict[str, _Set] = {}
    for name, load in loaders.items():
        train = load("train", n=sizes.n_train, seed=seed)
        test = load("test", n=sizes.n_test, seed=seed)
        t0 = time.time()
        mlp = _train(train, sizes.hidden, sizes.max_iter, seed)
        model = from_mlp(mlp)
        logits = model.predict(test.U)
        agree = float(np.mean(np.argmax(logits, axis=0) == mlp.predict(test.X_rows)))
        lines.append(f"- {name}: MLPClassifier{sizes.hidden} (ReLU), {train.m} training "
                     f"images, trained in {time.time() - t0:.1f} s; implicit model n = "
                     f"{model.n}, p = {model.p}, q = {model.q}; agrees with scikit-learn on "
                     f"{100 * agree:.2f}% of {test.m} test images.")
        data[name] = _Set(model, np.asarray(test.U), np.asarray(test.labels),
                          tuple(test.image_shape or (28, 28)))
        print(f"[attacks] {name}: trained in {time.time() - t0:.1f} s", flush=True)
    return data


def _sensitivity_figure(name: str, st: _Set, ok: Array, out: Path,
                        rng: np.random.Generator) -> None:
    """Figure 9: the sparse sensitivity attack (10% of the pixels) on correctly classified
    images."""
    res = sensitivity_attack(st.model, st.U[:, ok], 1.0, fraction=0.1, input_range=(0.0, 1.0),
                             seed=rng)
    pred = np.argmax(st.model.predict(res.U), axis=0)
    save_attack_figure(st.U[:, ok], res.U, out / f"{_slug(name)}_sensitivity_attack.png",
                       image_shape=st.shape,
                       captions_clean=[f"label {st.labels[i]}" for i in ok],
                       captions_adv=[f"predicted {p}" for p in pred],
                       title=f"{name}: sensitivity attack, {res.k} pixels set to random values")


def _slug(name: str) -> str:
    return name.lower().replace("-", "_")


def _lp_attacks(name: str, st: _Set, lp_idx: Array, relaxation: str, out: Path) -> list[str]:
    """Figures 10-11: LP attacks, dense (small box) and sparse (k pixels, full range); the
    report's table of certified bounds and true margins."""
    lines = ["", f"## LP attacks on {name} (Theorem 4.3, relaxation={relaxation})", "",
             ("| image | label | attack | set | certified bound on max margin | "
              "true margin y_t - y_label | prediction after |"),
             "|---|---|---|---|---|---|---|"]
    flipped = 0
    for kind, sig, kk in (("dense", 0.1, None), ("sparse", 1.0, 20)):
        t0 = time.time()
        res = lp_attack(st.model, st.U[:, lp_idx], sig, target="any", labels=st.labels[lp_idx],
                        k=kk, input_range=(0.0, 1.0), relaxation=relaxation)
        pred = np.argmax(st.model.predict(res.U), axis=0)
        flipped += int(np.sum(pred != st.labels[lp_idx]))
        where = f"|u - u0| <= {sig:g}" + ("" if kk is None else f", card <= {kk}")
        cell = where.replace("|", "\\|")  # a literal bar inside a markdown cell
        for j, i in enumerate(lp_idx):
            rec = res.lp[j]
            lines.append(f"| {i} | {st.labels[i]} | {kind} | {cell} | {rec.bound:.3f} | "
                         f"{rec.value:.3f} | {pred[j]} |")
        save_attack_figure(st.U[:, lp_idx], res.U, out / f"{_slug(name)}_lp_{kind}_attack.png",
                           image_shape=st.shape,
                           captions_clean=[f"label {st.labels[i]}" for i in lp_idx],
                           captions_adv=[f"predicted {p}" for p in pred],
                           title=f"{name}: {kind} LP attack ({where})")
        print(f"[attacks] {name}: {kind} LP attack on {len(lp_idx)} images in "
              f"{time.time() - t0:.1f} s", flush=True)
    return lines + ["", (f"The LP attacks changed the prediction of {flipped} of "
                         f"{2 * len(lp_idx)} correctly classified images.")]


def main(argv: Sequence[str] | None = None, prog: str | None = None) -> int:
    """``fenchel-idl attacks`` (also ``python -m fenchel_idl.apps.table1``): the attacks of
    section 7.3 on MNIST and Fashion-MNIST; see the module docstring. ``prog`` names the
    command in its help and in the table."""
    parser = _parser(prog or _PROG)
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    sizes = _sizes(args)
    t_start = time.time()
    lines = ["# Adversarial attacks on implicit models (section 7.3)", ""]
    data = _train_sets(sizes, args.seed, lines)
    table = attack_table({name: (st.model, st.U, st.labels) for name, st in data.items()},
                         seed=args.seed)
    lines += ["", "## Table 1 layout: attack success rate vs share of perturbed inputs", "",
              table.to_markdown()]
    print(table.to_markdown(), flush=True)
    rng = np.random.default_rng(args.seed)
    for name, st in data.items():
        ok = np.flatnonzero(np.argmax(st.model.predict(st.U), axis=0) == st.labels)[:5]
        _sensitivity_figure(name, st, ok, out, rng)
        lines += _lp_attacks(name, st, ok[:sizes.n_lp], args.relaxation, out)
    lines += ["", f"Total time {time.time() - t_start:.1f} s. Command: {parser.prog} --out "
              f"{args.out}" + (" --quick" if args.quick else "")]
    (out / "attack_table.md").write_text("\n".join(lines) + "\n")
    print(f"[attacks] wrote {out / 'attack_table.md'}", flush=True)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
