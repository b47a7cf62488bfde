"""scikit-learn estimators that train implicit models: :class:`ImplicitRegressor` and
:class:`ImplicitClassifier`.

They follow the scikit-learn API: samples are **rows** here, as everywhere in
scikit-learn; ``fit`` transposes them into the package's samples-as-columns layout once,
builds a :class:`fenchel_idl.TrainingProblem` (the Fenchel-relaxed problem of
section 6.3) and trains it with :func:`fenchel_idl.drivers.bcd.solve_bcd`; ``predict`` solves the
equilibrium ``x = phi(A x + B u)`` of the trained :class:`fenchel_idl.ImplicitModel` and
transposes back.

A classification fit is much slower than a regression fit of the same size: its (C, D)
block is an exponential-cone program with one log-sum-exp per sample.

Examples
--------
>>> import numpy as np
>>> from fenchel_idl.drivers.estimators import ImplicitRegressor
>>> rng = np.random.default_rng(0)
>>> X = rng.uniform(-1, 1, (60, 2))
>>> y = np.sin(3 * X[:, 0]) + X[:, 1]
>>> reg = ImplicitRegressor(n_states=5, max_sweeps=3, random_state=0).fit(X, y)
>>> reg.predict(X[:3]).shape, reg.model_.n, bool(reg.certificate_.well_posed)
((3,), 5, True)
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from numbers import Integral, Real
from types import MappingProxyType
from typing import Any, ClassVar

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy.special import log_softmax, softmax
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
from sklearn.utils import check_random_state
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted

from fenchel_idl.drivers.bcd import solve_bcd
from fenchel_idl.errors import ConvergenceWarning, InputTypeError, ValidationError
from fenchel_idl.problem.training_problem import TrainingProblem
from fenchel_idl.validation import array_bytes, check_memory

try:  # scikit-learn >= 1.6
    from sklearn.utils.validation import validate_data as _validate_data
except ImportError:  # pragma: no cover - scikit-learn < 1.6
    def _validate_data(estimator, *args, **kwargs):
        return estimator._validate_data(*args, **kwargs)

__all__ = ["ImplicitClassifier", "ImplicitRegressor"]

Array = NDArray[np.float64]

_ACTIVATIONS = ("relu", "leaky_relu", "tanh", "sigmoid", "identity")
_ON_FAILURE = ("fallback", "warn", "raise")


def _is_int(value: Any) -> bool:
    return isinstance(value, Integral) and not isinstance(value, bool)


def _is_real(value: Any) -> bool:
    return isinstance(value, Real) and not isinstance(value, bool)


class _ImplicitEstimator(BaseEstimator):
    """Shared hyperparameters, validation, fitting and prediction of the two estimators.

    The parameters are documented on :class:`ImplicitRegressor`.
    """

    _loss: ClassVar[str] = "squared"
    _default_bounds: ClassVar[Mapping[str, float]] = MappingProxyType({})
    _default_sweeps: ClassVar[int] = 3

    def __init__(self, *, n_states: int = 20, activation: Any = "relu", kappa: float = 0.5,
                 lam: Any = 1.0, bounds: Mapping[str, float | None] | None = None,
                 penalties: Sequence[Any] | None = None,
                 schedule: Mapping[str, Any] | None = None, max_sweeps: int | None = None,
                 tol: float = 1e-6, refine: bool | Mapping[str, Any] | None = None,
                 solver: str | None = None, on_failure: str = "warn",
                 random_state: Any = None, verbose: bool = False):
        self.n_states = n_states
        self.activation = activation
        self.kappa = kappa
        self.lam = lam
        self.bounds = bounds
        self.penalties = penalties
        self.schedule = schedule
        self.max_sweeps = max_sweeps
        self.tol = tol
        self.refine = refine
        self.solver = solver
        self.on_failure = on_failure
        self.random_state = random_state
        self.verbose = verbose

    # -- the one place where hyperparameters are validated ----------------------------------
    def _bad(self, name: str, expected: str, exc: type = ValidationError) -> Exception:
        value = getattr(self, name)
        return exc(f"The '{name}' parameter of {type(self).__name__} must be {expected}. Got "
                   f"{value!r} instead.")

    def _check_params(self) -> None:
        """Validate the hyperparameters (types and ranges), raising fenchel_idl errors.

        Checks that need the data (the length of an array ``lam``, penalties against the
        matrix shapes) are left to :class:`fenchel_idl.problem.training_problem.TrainingProblem`.
        """
        if not _is_int(self.n_states):
            raise self._bad("n_states", "an int in the range [1, inf)", InputTypeError)
        if self.n_states < 1:
            raise self._bad("n_states", "an int in the range [1, inf)")
        check_memory(f"{type(self).__name__} with n_states = {self.n_states} (two n x n "
                     "matrices)", array_bytes(*[(self.n_states, self.n_states)] * 2))
        if isinstance(self.activation, str) and self.activation not in _ACTIVATIONS:
            raise self._bad("activation", f"one of {list(_ACTIVATIONS)} or an Activation")
        if not _is_real(self.kappa):
            raise self._bad("kappa", "a float in the range (0, 1)", InputTypeError)
        if not 0.0 < float(self.kappa) < 1.0:
            raise self._bad("kappa", "a float in the range (0, 1)")
        if _is_real(self.lam):
            if not (np.isfinite(self.lam) and self.lam > 0):
                raise self._bad("lam", "a float in the range (0, inf) or an array of them")
        elif isinstance(self.lam, (bool, str)) or self.lam is None:
            raise self._bad("lam", "a float in the range (0, inf) or an array of them",
                            InputTypeError)
        if self.bounds is not None and not isinstance(self.bounds, Mapping):
            raise self._bad("bounds", "None or a dict with keys among 'B', 'C', 'D'",
                            InputTypeError)
        if self.penalties is not None and (isinstance(self.penalties, (str, bytes, Mapping))
                                           or not isinstance(self.penalties, Sequence)):
            raise self._bad("penalties", "None or a list of penalties", InputTypeError)
        if self.schedule is not None and not isinstance(self.schedule, Mapping):
            raise self._bad("schedule", "None or a dict of Schedule options", InputTypeError)
        if self.max_sweeps is not None:
            if not _is_int(self.max_sweeps):
                raise self._bad("max_sweeps", "None or an int in the range [1, inf)",
                                InputTypeError)
            if self.max_sweeps < 1:
                raise self._bad("max_sweeps", "None or an int in the range [1, inf)")
        if not _is_real(self.tol):
            raise self._bad("tol", "a float in the range [0, inf)", InputTypeError)
        if not (np.isfinite(self.tol) and self.tol >= 0):
            raise self._bad("tol", "a float in the range [0, inf)")
        if not (self.refine is None or isinstance(self.refine, (bool, np.bool_, Mapping))):
            raise self._bad("refine", "None, a bool or a dict of refinement options",
                            InputTypeError)
        if self.solver is not None and not isinstance(self.solver, str):
            raise self._bad("solver", "None or a CVXPY solver name", InputTypeError)
        if self.on_failure not in _ON_FAILURE:
            raise self._bad("on_failure", f"one of {list(_ON_FAILURE)}")
        if not isinstance(self.verbose, (bool, np.bool_, Integral)):
            raise self._bad("verbose", "a bool", InputTypeError)

    # -- fitting ----------------------------------------------------------------------------
    def _seed(self) -> int:
        return int(check_random_state(self.random_state).randint(np.iinfo(np.int32).max))

    def _fit_columns(self, U: Array, Y: Any) -> None:
        """Train on samples-as-columns data and set the fitted attributes."""
        bounds = {**self._default_bounds, **dict(self.bounds or {})}
        problem = TrainingProblem(U, Y, n=self.n_states, loss=self._loss,
                                  activation=self.activation, kappa=self.kappa, lam=self.lam,
                                  bounds=bounds or None, penalties=tuple(self.penalties or ()))
        refine: Any = None
        if isinstance(self.refine, Mapping):
            refine = dict(self.refine) or True  # an empty dict: the default options
        elif self.refine:
            refine = True
        sweeps = self._default_sweeps if self.max_sweeps is None else self.max_sweeps
        result = solve_bcd(problem, max_sweeps=sweeps, tol=self.tol,
                           schedule=None if self.schedule is None else dict(self.schedule),
                           refine=refine, seed=self._seed(),
                           on_failure=self.on_failure, solver=self.solver,
                           progress=bool(self.verbose))
        cert = result.certificate
        if not cert.blocks_certified:
            warnings.warn(f"{type(self).__name__}: some convex blocks were not solved to "
                          f"certified optimality (largest gap {cert.max_gap:.2e}); see "
                          "certificate_.solve_events.", ConvergenceWarning, stacklevel=3)
        self.model_ = result.model
        self.certificate_ = cert
        self.history_ = result.history
        self.n_iter_ = int(result.n_sweeps)
        self.bcd_result_ = result

    def _outputs(self, X: ArrayLike) -> Array:
        """The model outputs ``C x + D u`` at the equilibrium, shape (m, q)."""
        check_is_fitted(self, "model_")
        X = _validate_data(self, X, reset=False, dtype=np.float64)
        return np.ascontiguousarray(self.model_.predict(X.T).T)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.sparse = False
        tags.input_tags.allow_nan = False
        return tags


class ImplicitRegressor(RegressorMixin, _ImplicitEstimator):
    """Implicit-model regression trained by BCD on the Fenchel-relaxed problem.

    Fits ``y = C x + D u + d`` with ``x = phi(A x + B u + b)`` (equation (1.1)) under the
    squared loss, with ``||N(A, gamma)||_inf <= kappa`` so that the model is well-posed
    (Theorem 2.2). Single- and multi-output targets. Inputs and targets are standardized
    inside the training problem and the fitted model works on raw inputs.

    Parameters
    ----------
    n_states : int >= 1, default 20
        Number n of hidden states (rows of A).
    activation : str or Activation, default "relu"
        The componentwise map phi: "relu", "leaky_relu", "tanh", "sigmoid" or "identity",
        or an :class:`fenchel_idl.Activation` / :class:`fenchel_idl.Blockwise` value.
    kappa : float in (0, 1), default 0.5
        Radius of the well-posedness ball ``||N(A, gamma)||_inf <= kappa`` (section 4.3).
    lam : float > 0 or array_like of shape (n_states,), default 1.0
        Initial weights of the Fenchel divergence (section 6.3); the default line-search
        ``schedule`` adapts them as an inverse step size (a continuation schedule raises
        them).
    bounds : dict, optional
        Radii of the norm balls on B, C, D in standardized units, e.g. ``{"C": 20.0}``
        (see :class:`fenchel_idl.Bounds`); missing keys keep their defaults. The
        classifier's defaults are ``{"C": 5.0, "D": 5.0}``.
    penalties : list, optional
        Convex penalties, e.g. ``[{"name": "l1", "weight": 1e-3, "on": "A"}]`` (see
        :mod:`fenchel_idl.problem.penalties`).
    schedule : dict, optional
        Fields of :class:`fenchel_idl.Schedule`. The default is the line search on the
        true objective (the training loss never increases between sweeps);
        ``{"restart": False, "factor": 4}`` is the lam continuation.
    max_sweeps : int >= 1, optional
        Cap on the block-coordinate-descent sweeps (each solves the X, (A, B) and (C, D)
        blocks once). None: 3 for the regressor, 1 for the classifier.
    tol : float >= 0, default 1e-6
        Monotonicity tolerance of the BCD block updates.
    refine : None, bool or dict, default None
        Optional final gradient refinement (:func:`fenchel_idl.drivers.refine.refine`): True for
        its defaults, or a dict of :class:`fenchel_idl.drivers.refine.RefineOptions` fields such as
        ``{"epochs": 30, "lr": 0.01}``.
    solver : str, optional
        Force one CVXPY solver for every block (default: the certified fallback chain and
        the batched first-order blocks where they apply).
    on_failure : {"warn", "fallback", "raise"}, default "warn"
        When no solver certifies a block: keep the best solution and warn (as scikit-learn
        estimators do on non-convergence), raise after the fallback chain, or raise at once
        (see :mod:`fenchel_idl.blocks.solvers`).
    random_state : int, RandomState instance or None, default None
        Seeds the random-feature start of BCD and the refinement's mini-batches.
    verbose : bool, default False
        Show one progress line per sweep.

    Attributes
    ----------
    model_ : ImplicitModel
        The trained model; it takes samples as columns: ``model_.predict(X.T).T`` equals
        ``predict(X)`` for 2-D targets.
    certificate_ : fenchel_idl.Certificate
        What the run certifies: block optimality, monotonicity, well-posedness, the
        relaxation gap, the training metric.
    history_ : list of fenchel_idl.BlockRecord
        Every block update.
    bcd_result_ : fenchel_idl.BCDResult
        The whole result of :func:`fenchel_idl.drivers.bcd.solve_bcd`.
    n_iter_ : int
        Number of BCD sweeps run.
    n_outputs_ : int
        Number q of targets.
    n_features_in_ : int
    feature_names_in_ : ndarray of str
        Only when X had string column names.

    Raises
    ------
    ValidationError
        (from ``fit``) Out-of-range hyperparameters, NaN or inf in X or y; also a
        ``ValueError``.
    InputTypeError
        (from ``fit``) Hyperparameters of the wrong type; also a ``TypeError``.
    ResourceError
        (from ``fit``) Sizes (``n_states``, the data) whose training would need more memory
        than the limit, refused before anything is allocated; also a ``MemoryError``.

    Warns
    -----
    fenchel_idl.ConvergenceWarning
        Some block was not solved to certified optimality (with ``on_failure="warn"``).

    Notes
    -----
    The defaults (``n_states=20``, 3 sweeps) were chosen on scikit-learn's diabetes data,
    where more sweeps or states did not lower the held-out error. Every fit is well-posed
    by construction.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(1)
    >>> X = rng.standard_normal((80, 3)); y = np.abs(X[:, 0]) + 0.5 * X[:, 1]
    >>> reg = ImplicitRegressor(n_states=6, max_sweeps=3, random_state=0).fit(X, y)
    >>> bool(reg.score(X, y) > 0.8)
    True
    """

    _loss = "squared"

    def fit(self, X: ArrayLike, y: ArrayLike) -> ImplicitRegressor:
        """Train on X of shape (m, p) and y of shape (m,) or (m, q); returns self."""
        self._check_params()
        X, y = _validate_data(self, X, y, multi_output=True, y_numeric=True,
                              dtype=np.float64)
        y = np.asarray(y, dtype=np.float64)
        self._y_ndim = y.ndim
        Y = y[None, :] if y.ndim == 1 else y.T
        self._fit_columns(X.T, Y)
        self.n_outputs_ = Y.shape[0]
        return self

    def predict(self, X: ArrayLike) -> Array:
        """Predictions, ndarray of shape (m,) (or (m, q) when fitted on 2-D targets)."""
        out = self._outputs(X)
        return out[:, 0] if self._y_ndim == 1 else out

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True
        tags.target_tags.single_output = True
        return tags

    def _more_tags(self) -> dict:  # scikit-learn < 1.6
        return {"multioutput": True}


class ImplicitClassifier(ClassifierMixin, _ImplicitEstimator):
    """Implicit-model classification trained by BCD on the Fenchel-relaxed problem.

    The model's q = K outputs are class scores trained under the softmax cross-entropy
    (6.2); ``predict_proba`` is their softmax. Labels can be anything scikit-learn accepts
    (ints, strings); they are mapped to 0..K-1 for training and back in ``predict``. At
    least two classes are needed.

    Parameters
    ----------
    n_states, activation, kappa, lam, bounds, penalties, schedule, max_sweeps, tol, \
refine, solver, on_failure, random_state, verbose
        As for :class:`ImplicitRegressor`, with two different defaults: ``bounds``
        defaults to ``{"C": 5.0, "D": 5.0}``, which bounds the softmax logits (on
        separable data the cross-entropy (C, D) block otherwise has its optimum far out
        on the ball, where the exponential-cone solvers lose accuracy and fall back to
        slow ones), and ``max_sweeps=None`` means 1 sweep.

    Attributes
    ----------
    classes_ : ndarray of shape (K,)
        The class labels, sorted.
    model_, certificate_, history_, bcd_result_, n_iter_, n_features_in_, feature_names_in_
        As for :class:`ImplicitRegressor`; ``model_`` has q = K outputs.

    Raises
    ------
    ValidationError
        (from ``fit``) Out-of-range hyperparameters, NaN or inf inputs, a single class,
        or continuous targets; also a ``ValueError``.
    InputTypeError
        (from ``fit``) Hyperparameters of the wrong type; also a ``TypeError``.

    Notes
    -----
    Almost all of the time goes to the exponential-cone (C, D) block, which grows with
    the number of samples times classes. Hence one sweep by default: on scikit-learn's
    digits more sweeps cost as much again each without raising the test accuracy, while
    a short refinement (``refine={"epochs": 30, "lr": 0.01}``) costs little and does.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(2)
    >>> X = rng.standard_normal((80, 2)); y = np.where(X[:, 0] * X[:, 1] > 0, "a", "b")
    >>> clf = ImplicitClassifier(n_states=6, max_sweeps=3, random_state=0).fit(X, y)
    >>> clf.classes_.tolist(), clf.predict_proba(X[:2]).shape
    (['a', 'b'], (2, 2))
    """

    _loss = "cross_entropy"
    _default_bounds = MappingProxyType({"C": 5.0, "D": 5.0})
    _default_sweeps = 1

    def fit(self, X: ArrayLike, y: ArrayLike) -> ImplicitClassifier:
        """Train on X of shape (m, p) and labels y of shape (m,); returns self."""
        self._check_params()
        X, y = _validate_data(self, X, y, dtype=np.float64)
        check_classification_targets(y)
        classes, encoded = np.unique(y, return_inverse=True)
        if classes.size < 2:
            raise ValidationError(f"{type(self).__name__} needs samples of at least 2 classes "
                                  f"in 'y'; got 1 class: {classes.tolist()}.")
        self.classes_ = classes
        self._fit_columns(X.T, encoded.astype(np.int64))
        return self

    def decision_function(self, X: ArrayLike) -> Array:
        """Class scores: shape (m, K), or (m,) log-odds of ``classes_[1]`` when K = 2."""
        scores = self._outputs(X)
        return scores[:, 1] - scores[:, 0] if scores.shape[1] == 2 else scores

    def predict_proba(self, X: ArrayLike) -> Array:
        """Softmax of the class scores, ndarray of shape (m, K); rows sum to 1."""
        return softmax(self._outputs(X), axis=1)

    def predict_log_proba(self, X: ArrayLike) -> Array:
        """Log of :meth:`predict_proba`, computed stably, shape (m, K)."""
        return log_softmax(self._outputs(X), axis=1)

    def predict(self, X: ArrayLike) -> NDArray[Any]:
        """Predicted labels (the class of largest score), shape (m,)."""
        scores = self._outputs(X)
        return self.classes_[np.argmax(scores, axis=1)]
