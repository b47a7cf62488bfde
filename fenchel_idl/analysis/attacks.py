"""Adversarial attacks on implicit models (section 7.3 of the paper).

Every attack returns perturbed inputs inside its set: the box ``|u - u0| <= sigma_u``, cut
to a valid input range when one is given (for example [0, 1] for images), with at most k
changed entries when k (or a fraction of the inputs) is given.

=========================  ==============================================================
function                   what (paper)
=========================  ==============================================================
:func:`sensitivity_attack` perturb the inputs with the largest sensitivity (7.3.1, Thm 4.2)
:func:`gradient_attack`    perturb the inputs with the largest ``|grad_u loss|`` (7.3.1)
:func:`lp_attack`          the maximizer of the LP relaxation (7.3.2, Thm 4.3), dense or
                           sparse
:func:`attack_table`       attack success rates in the layout of Table 1
:func:`save_attack_figure` clean / perturbed / marked images, as Figures 9-11
=========================  ==============================================================

The Table 1 command that runs these attacks on MNIST and Fashion-MNIST is an application,
:mod:`fenchel_idl.apps.table1`.
"""

from __future__ import annotations

import textwrap
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from fenchel_idl.analysis.plots import _save_figure, pyplot
from fenchel_idl.analysis.robustness import (
    LPBound,
    _as_k,
    _as_model,
    _as_range,
    _as_sigma,
    lp_bound,
    sensitivity_matrix,
)
from fenchel_idl.drivers.gradients import input_gradient
from fenchel_idl.errors import InputTypeError, ShapeError, ValidationError
from fenchel_idl.model.implicit_model import ImplicitModel
from fenchel_idl.validation import as_float_array, as_samples, check_choice, check_int, check_real

__all__ = [
    "TABLE1_FRACTIONS",
    "AttackResult",
    "AttackTable",
    "attack_success_rate",
    "attack_table",
    "gradient_attack",
    "lp_attack",
    "save_attack_figure",
    "sensitivity_attack",
    "sensitivity_scores",
]

Array = NDArray[np.float64]

#: The fractions of perturbed inputs of Table 1 (0.1%, 1%, 10%, 20%, 30%).
TABLE1_FRACTIONS: tuple[float, ...] = (0.001, 0.01, 0.1, 0.2, 0.3)


@dataclass(frozen=True)
class AttackResult:
    """Perturbed inputs and how they were chosen.

    Attributes
    ----------
    U : ndarray of shape (p, m), or (p,) when the input was 1-D
        The perturbed inputs, inside the attack set.
    changed : ndarray of bool, same shape as U
        The entries selected for perturbation (at most k per column).
    k : int or None
        Number of inputs perturbed per sample (None for a dense attack).
    method : str
        "sensitivity", "gradient" or "lp".
    scores : ndarray
        The ranking used to select inputs: shape (p,) for the sensitivity attack (the same
        for every sample), (p, m) for the gradient attack; for the LP attack, ``|u - u0|``.
    lp : tuple of LPBound
        For :func:`lp_attack`, the LP record behind each column (its bound and value).
    """

    U: Array
    changed: NDArray[np.bool_]
    k: int | None
    method: str
    scores: Array
    lp: tuple[LPBound, ...] = field(default=())


# ------------------------------------------------------------------------------------------
# shared helpers
# ------------------------------------------------------------------------------------------

def _rng(seed: Any) -> np.random.Generator:
    if isinstance(seed, np.random.Generator):
        return seed
    if seed is None:
        return np.random.default_rng()
    return np.random.default_rng(check_int("seed", seed, low=0))


def _count(k: Any, fraction: Any, p: int) -> int:
    """Number of perturbed inputs: k, or round(fraction * p) (at least 1)."""
    if (k is None) == (fraction is None):
        raise ValidationError("give exactly one of 'k' (number of perturbed inputs) and "
                              f"'fraction' (share of the p = {p} inputs); got k={k!r}, "
                              f"fraction={fraction!r}.")
    if k is not None:
        return check_int("k", k, low=1, high=p)
    f = check_real("fraction", fraction, 0.0, 1.0, low_open=True)
    return int(min(p, max(1, round(f * p))))


def _check_in_range(U: Array, input_range: tuple[float, float] | None) -> None:
    if input_range is not None and U.size:
        lo, hi = input_range
        if U.min() < lo or U.max() > hi:
            raise ValidationError(f"'U' must lie in input_range [{lo}, {hi}]; got values in "
                                  f"[{U.min():.6g}, {U.max():.6g}].")


def _interval(U0: Array, sigma: Array, input_range: tuple[float, float] | None
              ) -> tuple[Array, Array]:
    lo = U0 - sigma[:, None]
    hi = U0 + sigma[:, None]
    if input_range is not None:
        lo = np.maximum(lo, input_range[0])
        hi = np.minimum(hi, input_range[1])
    return lo, hi


def _perturb(U0: Array, mask: NDArray[np.bool_], sigma: Array,
             input_range: tuple[float, float] | None, values: str,
             rng: np.random.Generator) -> Array:
    """New values for the masked entries, inside [u0 - sigma, u0 + sigma] cut to the range.

    ``values="random"`` draws them uniformly in that interval (the paper: "we perturb the
    input features into small random values"); ``"extreme"`` takes the interval end farther
    from u0.
    """
    lo, hi = _interval(U0, sigma, input_range)
    if values == "random":
        new = lo + (hi - lo) * rng.random(U0.shape)
    else:
        new = np.where(hi - U0 >= U0 - lo, hi, lo)
    return np.where(mask, np.clip(new, lo, hi), U0)


def _top_mask(scores: Array, k: int) -> NDArray[np.bool_]:
    """Boolean mask of the k largest scores of every column (ties: lower index first)."""
    order = np.argsort(-scores, axis=0, kind="stable")[:k]
    mask = np.zeros(scores.shape, dtype=bool)
    np.put_along_axis(mask, order, True, axis=0)
    return mask


def _setup(model: Any, U: Any, sigma_u: Any, input_range: Any, values: str
           ) -> tuple[ImplicitModel, Array, bool, Array, tuple[float, float] | None]:
    model = _as_model(model)
    U2, was_1d = as_samples("U", U, model.p, f"p = {model.p} inputs")
    sigma = _as_sigma(sigma_u, model.p)
    rng_ = _as_range(input_range)
    _check_in_range(U2, rng_)
    check_choice("values", values, ("random", "extreme"))
    return model, U2, was_1d, sigma, rng_


def _result(U: Array, mask: NDArray[np.bool_], was_1d: bool, **kw: Any) -> AttackResult:
    if was_1d:
        U, mask = U[:, 0], mask[:, 0]
    return AttackResult(U=U, changed=mask, **kw)


# ------------------------------------------------------------------------------------------
# section 7.3.1: the sensitivity matrix attack and the gradient attack
# ------------------------------------------------------------------------------------------

def sensitivity_scores(model: ImplicitModel, target: int | ArrayLike | None = None) -> Array:
    """Importance of each input according to the sensitivity matrix S of Theorem 4.2.

    Parameters
    ----------
    model : ImplicitModel
    target : int or array_like of shape (q,), optional
        None: the column sums of S (effect on all outputs); an int t: the row ``S[t]``
        (effect on output t); an array w >= 0: ``w^T S``.

    Returns
    -------
    ndarray of shape (p,)

    Raises
    ------
    ValidationError
        A target outside [0, q), or negative weights.
    """
    model = _as_model(model)
    S = sensitivity_matrix(model)
    if target is None:
        return S.sum(axis=0)
    if isinstance(target, (int, np.integer)) and not isinstance(target, bool):
        t = check_int("target", target, low=0, high=model.q - 1)
        return S[t].copy()
    w = as_float_array("target", target, ndim=1)
    if w.shape != (model.q,):
        raise ShapeError(f"'target' must be an int in [0, {model.q}) or weights of shape "
                         f"({model.q},); got shape {w.shape}.")
    if np.any(w < 0):
        raise ValidationError("'target' weights must be nonnegative; got a minimum of "
                              f"{w.min():.6g}.")
    return w @ S


def sensitivity_attack(model: ImplicitModel, U: ArrayLike, sigma_u: ArrayLike | float = 1.0,
                       *, k: int | None = None, fraction: float | None = None,
                       target: int | ArrayLike | None = None,
                       input_range: tuple[float, float] | None = None,
                       values: str = "random", seed: Any = None) -> AttackResult:
    """Sensitivity-matrix attack of section 7.3.1.

    The inputs with the largest sensitivity (column sums of S, Theorem 4.2, or the row of a
    target output) are perturbed, the same ones for every sample: the attack needs no data,
    only the model. As in the paper, "we perturb the input features into small random
    values": each selected input is drawn uniformly in ``[u0 - sigma_u, u0 + sigma_u]`` cut
    to ``input_range`` (``values="extreme"`` takes the end farther from u0 instead).

    Parameters
    ----------
    model : ImplicitModel
        With lambda_PF(N(A, gamma)) < 1 (any feedforward network qualifies).
    U : array_like of shape (p, m) or (p,)
        Clean inputs, samples as columns.
    sigma_u : float or array_like of shape (p,)
        Box radii. With ``input_range=(0, 1)`` and ``sigma_u=1`` a selected pixel gets any
        value in [0, 1].
    k, fraction : int or float
        Exactly one: the number of perturbed inputs, or their share of p (rounded, >= 1).
    target : int or array_like of shape (q,), optional
        See :func:`sensitivity_scores`.
    input_range : (float, float), optional
        Valid input range; U must lie in it.
    values : {"random", "extreme"}
    seed : int, numpy Generator or None

    Returns
    -------
    AttackResult
        ``scores`` of shape (p,).

    Raises
    ------
    ValidationError
        Both or neither of k and fraction; k outside [1, p]; negative sigma_u; U outside
        input_range.
    ShapeError
        U or sigma_u of the wrong shape.
    NotWellPosedError
        lambda_PF(N(A, gamma)) >= 1 (no sensitivity matrix).

    Examples
    --------
    >>> m = ImplicitModel(A=[[0.0]], B=[[1.0, 0.0, -3.0]], C=[[1.0]], D=[[0.0, 0.5, 0.0]])
    >>> res = sensitivity_attack(m, np.zeros(3), 0.1, k=1, values="extreme")
    >>> res.U
    array([0. , 0. , 0.1])
    """
    model, U2, was_1d, sigma, rng_ = _setup(model, U, sigma_u, input_range, values)
    kk = _count(k, fraction, model.p)
    scores = sensitivity_scores(model, target)
    mask = np.repeat(_top_mask(scores[:, None], kk), U2.shape[1], axis=1)
    Uadv = _perturb(U2, mask, sigma, rng_, values, _rng(seed))
    return _result(Uadv, mask, was_1d, k=kk, method="sensitivity", scores=scores)


def _targets(model: ImplicitModel, Y: Any, m: int, loss: str) -> Array:
    arr = np.asarray(Y)
    if loss == "cross_entropy" and arr.ndim == 1:
        if not np.issubdtype(arr.dtype, np.integer):
            raise InputTypeError(f"'Y' labels must be integers; got dtype {arr.dtype}.")
        if arr.shape != (m,):
            raise ShapeError(f"'Y' labels must have shape ({m},) (one per sample); got "
                             f"{arr.shape}.")
        if arr.size and (arr.min() < 0 or arr.max() >= model.q):
            raise ValidationError(f"'Y' labels must lie in [0, {model.q}); got values in "
                                  f"[{arr.min()}, {arr.max()}].")
        out = np.zeros((model.q, m))
        out[arr, np.arange(m)] = 1.0
        return out
    Y2, _ = as_samples("Y", Y, model.q, f"q = {model.q} outputs")
    if Y2.shape[1] != m:
        raise ShapeError(f"'Y' must have {m} columns like U; got shape {Y2.shape}.")
    return Y2


def gradient_attack(model: ImplicitModel, U: ArrayLike, Y: ArrayLike,
                    sigma_u: ArrayLike | float = 1.0, *, k: int | None = None,
                    fraction: float | None = None, loss: str = "cross_entropy",
                    input_range: tuple[float, float] | None = None, values: str = "random",
                    seed: Any = None) -> AttackResult:
    """Gradient (saliency) attack of section 7.3.1, the baseline of Table 1.

    For every sample, the inputs with the largest ``|grad_u L(y(u), y)|`` are perturbed
    (into random values, as for :func:`sensitivity_attack`). The input gradient comes from
    implicit differentiation, :func:`fenchel_idl.drivers.gradients.input_gradient`: the adjoint
    equilibrium ``V = J_phi^T (A^T V + C^T G)`` of (6.5)-(6.6), then
    ``grad_u = B^T V + D^T G``.

    Parameters
    ----------
    model : ImplicitModel
    U : array_like of shape (p, m) or (p,)
    Y : array_like
        Class labels of shape (m,) (int) for the cross-entropy loss, or targets of shape
        (q, m).
    sigma_u, k, fraction, input_range, values, seed
        As :func:`sensitivity_attack`.
    loss : {"cross_entropy", "squared"}

    Returns
    -------
    AttackResult
        ``scores`` of shape (p, m): ``|grad_u L|``.

    Raises
    ------
    ValidationError, ShapeError, InputTypeError
        Bad k/fraction, sigma_u, labels or shapes.
    """
    model, U2, was_1d, sigma, rng_ = _setup(model, U, sigma_u, input_range, values)
    loss = check_choice("loss", loss, ("cross_entropy", "squared"))
    kk = _count(k, fraction, model.p)
    if was_1d and np.ndim(Y) == 0:
        Y = np.asarray([Y])
    Yt = _targets(model, Y, U2.shape[1], loss)
    scores = np.abs(input_gradient(model, U2, Yt, loss=loss))
    mask = _top_mask(scores, kk)
    Uadv = _perturb(U2, mask, sigma, rng_, values, _rng(seed))
    return _result(Uadv, mask, was_1d, k=kk, method="gradient",
                   scores=scores[:, 0] if was_1d else scores)


# ------------------------------------------------------------------------------------------
# section 7.3.2: the LP attack
# ------------------------------------------------------------------------------------------

def lp_attack(model: ImplicitModel, U: ArrayLike, sigma_u: ArrayLike | float, *,
              c: ArrayLike | None = None, target: int | str | ArrayLike | None = None,
              labels: ArrayLike | None = None, k: int | None = None,
              input_range: tuple[float, float] | None = None, relaxation: str = "paper",
              solver: str | Sequence[str] | None = None) -> AttackResult:
    """LP-relaxation attack of section 7.3.2 (ReLU models), dense or sparse (k given).

    For each column u0 of U, the attack is the maximizer of :func:`fenchel_idl.lp_bound`
    (Theorem 4.3) for one of three objectives:

    - ``c`` given: the state objective ``c^T x``;
    - ``target`` given: the output margin ``y_t - y_l`` (``c = C_t - C_l``,
      ``d = D_t - D_l``, offset ``bias_y[t] - bias_y[l]``; the records' ``bound`` and
      ``value`` are then margins and the attack succeeds when ``value > 0``), where l is
      the sample's label (or the model's prediction at u0 when ``labels`` is None).
      ``target="any"`` tries every class t != l and keeps the attack with the largest true
      margin; ``"runner_up"`` takes the second-largest output at u0;
    - neither: the largest state discrepancy ``||x - x0||_2^2`` (the paper's choice,
      ``objective="discrepancy"``; up to 2n LPs per sample).

    Parameters
    ----------
    model : ImplicitModel
        ReLU activation, lambda_PF(|A|) < 1.
    U : array_like of shape (p, m) or (p,)
    sigma_u : float or array_like of shape (p,)
    c : array_like of shape (n,), optional
    target : int, "any", "runner_up" or array_like of int of shape (m,), optional
    labels : array_like of int of shape (m,), optional
    k : int, optional
        Sparse attack: at most k changed inputs (set (4.2)).
    input_range : (float, float), optional
    relaxation : {"paper", "triangle"}
        See :func:`fenchel_idl.lp_bound`.
    solver : str or sequence of str, optional

    Returns
    -------
    AttackResult
        ``lp`` holds one :class:`LPBound` per column; ``scores`` is ``|u - u0|``.

    Raises
    ------
    ValidationError
        Both c and target given, a bad target, a non-ReLU model, and the errors of
        :func:`fenchel_idl.lp_bound`.
    SolverError
        The LP failed with every solver.
    """
    model = _as_model(model)
    U2, was_1d = as_samples("U", U, model.p, f"p = {model.p} inputs")
    m = U2.shape[1]
    if c is not None and target is not None:
        raise ValidationError("give at most one of 'c' (state objective) and 'target' "
                              "(output margin); got both.")
    kk = _as_k(k, model.p)
    if labels is None:
        lab = np.argmax(model.predict(U2), axis=0) if target is not None else np.zeros(m, int)
    else:
        lab = np.atleast_1d(np.asarray(labels))
        if lab.shape != (m,) or not np.issubdtype(lab.dtype, np.integer):
            raise ShapeError(f"'labels' must be integers of shape ({m},); got {lab.shape} of "
                             f"dtype {lab.dtype}.")
        if lab.min() < 0 or lab.max() >= model.q:
            raise ValidationError(f"'labels' must lie in [0, {model.q}); got values in "
                                  f"[{lab.min()}, {lab.max()}].")
    if target is None or isinstance(target, str):
        if isinstance(target, str):
            check_choice("target", target, ("any", "runner_up"))
            if model.q < 2:
                raise ValidationError(f"target={target!r} needs at least 2 outputs (classes); "
                                      f"the model has q = {model.q}.")
        tgt: list[Any] = [target] * m
    else:
        tarr = np.atleast_1d(np.asarray(target))
        if not np.issubdtype(tarr.dtype, np.integer):
            raise ValidationError("'target' must be an int, 'any', 'runner_up' or integers of "
                                  f"shape ({m},); got {target!r}.")
        if tarr.shape == (1,):
            tarr = np.repeat(tarr, m)
        if tarr.shape != (m,) or tarr.min() < 0 or tarr.max() >= model.q:
            raise ValidationError(f"'target' must be classes in [0, {model.q}), one or {m}; "
                                  f"got {target!r}.")
        tgt = [int(t) for t in tarr]
    Uadv = U2.copy()
    records = []
    for j in range(m):
        u0 = U2[:, j]
        if c is None and tgt[j] is None:
            res = lp_bound(model, u0, sigma_u, k=kk, objective="discrepancy",
                           relaxation=relaxation, input_range=input_range, solver=solver)
        elif c is not None:
            res = lp_bound(model, u0, sigma_u, c, kk, relaxation=relaxation,
                           input_range=input_range, solver=solver)
        else:
            label = int(lab[j])
            if tgt[j] == "any":
                classes = [t for t in range(model.q) if t != label]
            elif tgt[j] == "runner_up":
                y0 = model.predict(u0)
                y0[label] = -np.inf
                classes = [int(np.argmax(y0))]
            else:
                classes = [tgt[j]]
            tries = [lp_bound(model, u0, sigma_u, model.C[t] - model.C[label], kk,
                              d=model.D[t] - model.D[label],
                              offset=float(model.bias_y[t] - model.bias_y[label]),
                              relaxation=relaxation, input_range=input_range, solver=solver)
                     for t in classes]
            res = max(tries, key=lambda r: r.value)
        records.append(res)
        Uadv[:, j] = res.u
    changed = Uadv != U2
    return _result(Uadv, changed, was_1d, k=kk, method="lp", lp=tuple(records),
                   scores=np.abs(Uadv - U2)[:, 0] if was_1d else np.abs(Uadv - U2))


# ------------------------------------------------------------------------------------------
# Table 1 and Figures 9-11
# ------------------------------------------------------------------------------------------

def attack_success_rate(model: ImplicitModel, U_clean: ArrayLike, U_adv: ArrayLike,
                        labels: ArrayLike) -> float:
    """Share of the correctly classified clean samples that the attack misclassifies.

    Parameters
    ----------
    model : ImplicitModel
        Prediction = argmax of the outputs.
    U_clean, U_adv : array_like of shape (p, m)
    labels : array_like of int, shape (m,)

    Returns
    -------
    float in [0, 1] (nan when no clean sample is classified correctly)
    """
    model = _as_model(model)
    U0, _ = as_samples("U_clean", U_clean, model.p, f"p = {model.p} inputs")
    U1, _ = as_samples("U_adv", U_adv, model.p, f"p = {model.p} inputs")
    lab = np.asarray(labels)
    if U0.shape != U1.shape or lab.shape != (U0.shape[1],):
        raise ShapeError(f"'U_clean' {U0.shape}, 'U_adv' {U1.shape} and 'labels' {lab.shape} "
                         "must describe the same samples.")
    ok = np.argmax(model.predict(U0), axis=0) == lab
    if not ok.any():
        return float("nan")
    fooled = np.argmax(model.predict(U1[:, ok]), axis=0) != lab[ok]
    return float(np.mean(fooled))


@dataclass(frozen=True)
class AttackTable:
    """Attack success rates in the layout of Table 1 of the paper.

    Attributes
    ----------
    fractions : tuple of float
        Shares of perturbed inputs (rows).
    datasets : tuple of str
        Data set names (columns within each attack).
    sensitivity : ndarray of shape (len(fractions), len(datasets))
        Success rates of :func:`sensitivity_attack`.
    gradient : ndarray of shape (len(fractions), len(datasets))
        Success rates of :func:`gradient_attack`.
    k : ndarray of int, shape (len(fractions), len(datasets))
        Number of perturbed inputs per sample.
    clean_accuracy : ndarray of shape (len(datasets),)
    n_samples : ndarray of int, shape (len(datasets),)
    settings : str
        How the inputs were perturbed (radius, range, values).
    """

    fractions: tuple[float, ...]
    datasets: tuple[str, ...]
    sensitivity: Array
    gradient: Array
    k: NDArray[np.int64]
    clean_accuracy: Array
    n_samples: NDArray[np.int64]
    settings: str = ""

    def to_markdown(self) -> str:
        """The table as GitHub markdown, rows = fractions, as in Table 1."""
        names = self.datasets
        head = ("| % of perturbed inputs | "
                + " | ".join(f"Sensitivity: {d}" for d in names) + " | "
                + " | ".join(f"Gradient: {d}" for d in names) + " |")
        sep = "|" + "---|" * (1 + 2 * len(names))
        rows = [head, sep]
        for i, f in enumerate(self.fractions):
            cells = [f"{100 * f:g}% (k = {', '.join(str(int(v)) for v in self.k[i])})"]
            cells += [f"{100 * v:.2f}%" for v in self.sensitivity[i]]
            cells += [f"{100 * v:.2f}%" for v in self.gradient[i]]
            rows.append("| " + " | ".join(cells) + " |")
        acc = ", ".join(f"{d}: {100 * a:.2f}% clean accuracy on {int(n)} test samples"
                        for d, a, n in zip(names, self.clean_accuracy, self.n_samples))
        note = ("Attack success rate = share of the correctly classified test samples that "
                f"are misclassified after the attack. {acc}.")
        if self.settings:
            note += f" {self.settings}"
        return "\n".join(rows) + "\n\n" + note + "\n"

    def __str__(self) -> str:
        return self.to_markdown()


def attack_table(data: Mapping[str, tuple[ImplicitModel, ArrayLike, ArrayLike]],
                 fractions: Sequence[float] = TABLE1_FRACTIONS,
                 sigma_u: float = 1.0, input_range: tuple[float, float] | None = (0.0, 1.0),
                 values: str = "random", seed: int = 0) -> AttackTable:
    """Success rates of the sensitivity and gradient attacks, as in Table 1.

    Parameters
    ----------
    data : mapping name -> (model, U, labels)
        A model with its test inputs U of shape (p, m) and integer labels of shape (m,).
    fractions : sequence of float in (0, 1]
        Shares of perturbed inputs (default 0.1%, 1%, 10%, 20%, 30%).
    sigma_u : float
        Box radius; with the default range (0, 1) and ``sigma_u=1`` a perturbed pixel gets
        a random value in [0, 1].
    input_range : (float, float) or None
    values : {"random", "extreme"}
    seed : int

    Returns
    -------
    AttackTable

    Raises
    ------
    ValidationError
        An empty mapping or bad fractions, and the errors of the attacks.
    """
    if not isinstance(data, Mapping) or not data:
        raise ValidationError("'data' must be a non-empty mapping name -> (model, U, labels); "
                              f"got {data!r}.")
    fr = tuple(check_real("fractions[i]", f, 0.0, 1.0, low_open=True) for f in fractions)
    if not fr:
        raise ValidationError("'fractions' must not be empty.")
    names = tuple(str(n) for n in data)
    sens = np.zeros((len(fr), len(names)))
    grad = np.zeros_like(sens)
    ks = np.zeros((len(fr), len(names)), dtype=np.int64)
    acc = np.zeros(len(names))
    ns = np.zeros(len(names), dtype=np.int64)
    rng = np.random.default_rng(check_int("seed", seed, low=0))
    for j, name in enumerate(names):
        entry = data[name]
        if not isinstance(entry, (tuple, list)) or len(entry) != 3:
            raise ValidationError(f"'data[{name!r}]' must be a (model, U, labels) triple.")
        model, U, labels = entry
        model = _as_model(model)
        U2, _ = as_samples("U", U, model.p, f"p = {model.p} inputs")
        lab = np.asarray(labels)
        if lab.shape != (U2.shape[1],):
            raise ShapeError(f"'labels' of {name!r} must have shape ({U2.shape[1]},); got "
                             f"{lab.shape}.")
        acc[j] = float(np.mean(np.argmax(model.predict(U2), axis=0) == lab))
        ns[j] = U2.shape[1]
        for i, f in enumerate(fr):
            s_res = sensitivity_attack(model, U2, sigma_u, fraction=f, input_range=input_range,
                                       values=values, seed=rng)
            g_res = gradient_attack(model, U2, lab, sigma_u, fraction=f,
                                    input_range=input_range, values=values, seed=rng)
            ks[i, j] = s_res.k if s_res.k is not None else 0
            sens[i, j] = attack_success_rate(model, U2, s_res.U, lab)
            grad[i, j] = attack_success_rate(model, U2, g_res.U, lab)
    rng_txt = "" if input_range is None else f", cut to [{input_range[0]:g}, {input_range[1]:g}]"
    settings = (f"Perturbed inputs get {values} values in [u0 - {sigma_u:g}, u0 + {sigma_u:g}]"
                f"{rng_txt}.")
    return AttackTable(fractions=fr, datasets=names, sensitivity=sens, gradient=grad, k=ks,
                       clean_accuracy=acc, n_samples=ns, settings=settings)


def save_attack_figure(U_clean: ArrayLike, U_adv: ArrayLike, path: str | Path, *,
                       image_shape: Sequence[int] = (28, 28), max_images: int = 5,
                       captions_clean: Sequence[str] | None = None,
                       captions_adv: Sequence[str] | None = None,
                       title: str | None = None) -> Path:
    """Save clean and perturbed images side by side, as Figures 9-11 (PNG).

    Three rows: the clean images, the perturbed images, and the perturbed images in grey
    with the changed pixels marked in red (as in Figure 9).

    Parameters
    ----------
    U_clean, U_adv : array_like of shape (p, m) with p = prod(image_shape), values in [0, 1]
    path : str or Path
        Output file (PNG).
    image_shape : (int, int)
    max_images : int
        At most this many columns are drawn.
    captions_clean, captions_adv : sequence of str, optional
        One caption per image (for example the predicted class).
    title : str, optional

    Returns
    -------
    Path

    Raises
    ------
    ShapeError
        Arrays that differ in shape or do not match ``image_shape`` (height, width).
    """
    A0 = as_float_array("U_clean", U_clean, ndim=(1, 2))
    A1 = as_float_array("U_adv", U_adv, ndim=(1, 2))
    if A0.ndim == 1:
        A0, A1 = A0[:, None], A1.reshape(-1, 1)
    if A0.shape != A1.shape:
        raise ShapeError(f"'U_clean' {A0.shape} and 'U_adv' {A1.shape} must have the same "
                         "shape.")
    if len(tuple(image_shape)) != 2:
        raise ShapeError(f"'image_shape' must be (height, width); got {tuple(image_shape)}.")
    h, w = (int(s) for s in image_shape)
    if A0.shape[0] != h * w:
        raise ShapeError(f"'image_shape' {image_shape} must have p = {A0.shape[0]} pixels.")
    cols = min(check_int("max_images", max_images, low=1), A0.shape[1])
    plt = pyplot()
    fig, axes = plt.subplots(3, cols, figsize=(max(1.9 * cols, 4.8), 6.0), squeeze=False)
    for j in range(cols):
        clean = np.clip(A0[:, j].reshape(h, w), 0, 1)
        adv = np.clip(A1[:, j].reshape(h, w), 0, 1)
        diff = A1[:, j].reshape(h, w) != A0[:, j].reshape(h, w)
        marked = np.stack([adv] * 3, axis=-1)
        marked[diff] = (1.0, 0.0, 0.0)
        for row, img in enumerate((clean, adv, marked)):
            ax = axes[row, j]
            ax.imshow(img, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
        if captions_clean is not None and j < len(captions_clean):
            axes[0, j].set_title(str(captions_clean[j]), fontsize=8)
        if captions_adv is not None and j < len(captions_adv):
            axes[1, j].set_title(str(captions_adv[j]), fontsize=8)
        axes[2, j].set_title(f"{int(diff.sum())} changed", fontsize=8)
    axes[0, 0].set_ylabel("clean")
    axes[1, 0].set_ylabel("perturbed")
    axes[2, 0].set_ylabel("changes (red)")
    if title:
        fig.suptitle(textwrap.fill(title, width=max(30, 16 * cols)), fontsize=10)
    return _save_figure(fig, path, make_parents=True)
