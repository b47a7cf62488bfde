"""BLAS thread limits for the thin matrix products of BCD."""

from __future__ import annotations

import contextlib
import functools
import os
from collections.abc import Callable, Iterator

from fenchel_idl.errors import ValidationError

__all__ = ["blas_controller", "blas_threads", "env_blas_limit", "env_blas_threads",
           "wide_blas_limit"]


@functools.lru_cache(maxsize=1)
def blas_controller():
    """The threadpoolctl controller of this process (None without threadpoolctl)."""
    try:
        from threadpoolctl import ThreadpoolController
    except ImportError:  # pragma: no cover - threadpoolctl comes with scikit-learn
        return None
    return ThreadpoolController()


def env_blas_limit() -> int | None:
    """The BLAS thread limit of ``FENCHEL_IDL_BLAS_THREADS`` (default 1; None for "auto")."""
    raw = os.environ.get("FENCHEL_IDL_BLAS_THREADS", "1").strip().lower()
    if raw in ("", "auto", "none"):
        return None
    try:
        value = int(raw)
    except ValueError:
        raise ValidationError("the environment variable FENCHEL_IDL_BLAS_THREADS must be a "
                              f"positive integer or 'auto'; got {raw!r}.") from None
    if value < 1:
        raise ValidationError("the environment variable FENCHEL_IDL_BLAS_THREADS must be a "
                              f"positive integer or 'auto'; got {raw!r}.")
    return value


def wide_blas_limit() -> int | None:
    """The BLAS thread limit for products over all samples at MNIST scale (an output of
    q x m with m in the tens of thousands, as in the cross-entropy readout), which do gain
    from threads (measured: 1.4x on 2 cores for the readout of problems/mnist_bcd.toml):
    ``FENCHEL_IDL_BLAS_THREADS`` when it is set, else every core."""
    if os.environ.get("FENCHEL_IDL_BLAS_THREADS", "").strip():
        return env_blas_limit()
    return os.cpu_count() or 1


@contextlib.contextmanager
def blas_threads(limit: int | None = 1) -> Iterator[None]:
    """Limit the BLAS thread pool within a ``with`` block (``None``: leave it alone).

    The products of BCD are thin (an inner dimension of n + p + 1), so they gain little
    from BLAS threads, while a multithreaded BLAS on a busy machine makes them much slower;
    BCD therefore runs on one BLAS thread unless ``FENCHEL_IDL_BLAS_THREADS`` says otherwise.

    Examples
    --------
    >>> import numpy as np
    >>> with blas_threads(1):
    ...     float(np.ones((2, 3)) @ np.ones(3) @ np.ones(2))
    6.0
    """
    ctl = blas_controller() if limit is not None else None
    if ctl is None:
        yield
        return
    with ctl.limit(limits=int(limit), user_api="blas"):
        yield


def env_blas_threads(fn: Callable) -> Callable:
    """Decorator: run ``fn`` under :func:`blas_threads` with the limit of the environment
    variable ``FENCHEL_IDL_BLAS_THREADS`` (default 1; ``auto`` leaves BLAS alone)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        with blas_threads(env_blas_limit()):
            return fn(*args, **kwargs)

    return wrapper


