"""Scaling models of time taken against workers: Amdahl's law and the Universal Scalability Law.

* Amdahl: ``T(n) = T1 * (s + (1 - s) / n)`` with the serial fraction ``s`` in [0, 1]. Time falls
  with n toward ``T1 * s``; the speedup is bounded by ``1 / s``. No finite best worker count.
* USL (Gunther): relative throughput ``X(n) = n / (1 + a (n - 1) + b n (n - 1))``, i.e.
  ``T(n) = T1 * (1 + a (n - 1) + b n (n - 1)) / n`` with contention ``a >= 0`` and coherency
  ``b >= 0``. With ``b > 0`` (and ``a < 1``) time is least at ``n* = sqrt((1 - a) / b)``.

Both models are linear in non-negative coefficients (Amdahl: ``T = A + B / n``; USL:
``T = c0 / n + c1 (n - 1) / n + c2 (n - 1)`` with ``T1 = c0, a = c1 / c0, b = c2 / c0``), so
they are fitted by non-negative least squares, which finds the global optimum without starting
values.
Residuals are relative (``T_model / T_measured - 1``): a point at 60 s weighs as much as one at
600 s. The points are the mean time taken per worker count. T1 is the model's time on one
worker, extrapolated when no one-worker trial ran.

Amdahl needs at least 2 distinct worker counts and the USL 3. With exactly that many the curve
passes through every point: it describes, it does not test the model.

Oversubscribed points (more workers than cores) measure contention for cores, not the
parallel algorithm. Each model is fitted with and without them; the reported fit leaves them
out when enough points remain (policy ``auto``), and says which points it used.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

MIN_WORKER_COUNTS = {"amdahl": 2, "usl": 3}
POLICIES = ("auto", "exclude", "include")


def amdahl_time(n, t1: float, serial: float):
    """Amdahl's law: predicted time on ``n`` workers."""
    n = np.asarray(n, dtype=float)
    return t1 * (serial + (1.0 - serial) / n)


def usl_time(n, t1: float, contention: float, coherency: float):
    """The Universal Scalability Law: predicted time on ``n`` workers."""
    n = np.asarray(n, dtype=float)
    return t1 * (1.0 + contention * (n - 1.0) + coherency * n * (n - 1.0)) / n


@dataclass
class ModelFit:
    """One model fitted to one set of points (or why it could not be).

    ``params``: Amdahl ``T1_s, serial_fraction``; USL ``T1_s, contention, coherency``.
    ``best_workers``: the whole worker count with the least predicted time, None when time keeps
    falling (no finite optimum); ``best_n`` the continuous optimum (inf when none);
    ``best_time_s`` the predicted time at ``best_workers`` or, with no optimum, the limit time
    approaches; ``max_speedup`` the predicted speedup over one worker there.
    """

    model: str
    points: str
    workers: list[int]
    fitted: bool = False
    message: str = ""
    params: dict[str, float] = field(default_factory=dict)
    best_workers: int | None = None
    best_n: float = math.nan
    best_time_s: float = math.nan
    max_speedup: float = math.nan
    rmse_s: float = math.nan

    def predict(self, n) -> np.ndarray:
        """Predicted time (s) on ``n`` workers; NaN when the model was not fitted."""
        if not self.fitted:
            return np.full(np.shape(n), math.nan)
        if self.model == "amdahl":
            return amdahl_time(n, self.params["T1_s"], self.params["serial_fraction"])
        return usl_time(n, self.params["T1_s"], self.params["contention"], self.params["coherency"])

    def summary(self) -> str:
        """One line: the parameters and the predicted best worker count, or why there is no fit."""
        name = "Amdahl" if self.model == "amdahl" else "USL"
        if not self.fitted:
            return f"{name}: {self.message}"
        p = self.params
        if self.model == "amdahl":
            text = f"Amdahl: T1 = {p['T1_s']:.1f} s, serial fraction s = {p['serial_fraction']:.3f}"
            if p["serial_fraction"] >= 0.999:
                text += (
                    ": no speedup; the times do not fall with more workers, which Amdahl's law "
                    f"cannot describe (RMSE {self.rmse_s:.1f} s; see the USL)"
                )
            else:
                text += (
                    f"; no finite best worker count: time falls toward T1*s = "
                    f"{self.best_time_s:.1f} s (speedup at most {_fmt_speedup(self.max_speedup)})"
                )
        else:
            text = (
                f"USL: T1 = {p['T1_s']:.1f} s, contention a = {p['contention']:.4f}, "
                f"coherency b = {p['coherency']:.5f}; "
            )
            if self.best_workers is None:
                text += (
                    f"no finite best worker count (b = 0): time falls toward "
                    f"{self.best_time_s:.1f} s (speedup at most {_fmt_speedup(self.max_speedup)})"
                )
            else:
                text += (
                    f"best at {self.best_workers} workers (n* = {self.best_n:.2f}), predicted "
                    f"{self.best_time_s:.1f} s (speedup {self.max_speedup:.2f} over 1 worker)"
                )
        return text + (f"; {self.message}" if self.message else "")


def _fmt_speedup(value: float) -> str:
    return "unbounded" if math.isinf(value) else f"{value:.2f}"


@dataclass
class ScalingFit:
    """The models of one epoch budget (and setting): reported fits plus the other point set's."""

    setting: str
    epochs: int
    points: pd.DataFrame  # workers, time_total_s, time_total_s_ci95, n, oversubscribed
    amdahl: ModelFit
    usl: ModelFit
    alternatives: list[ModelFit] = field(default_factory=list)

    @property
    def label(self) -> str:
        return f"{self.epochs} epochs" + (f", {self.setting}" if self.setting else "")


def _distinct(workers, times) -> tuple[np.ndarray, np.ndarray]:
    """Mean time per distinct worker count, sorted by workers."""
    frame = pd.DataFrame({"n": np.asarray(workers, float), "t": np.asarray(times, float)}).dropna()
    frame = frame[(frame["n"] >= 1) & (frame["t"] > 0)].groupby("n", as_index=False)["t"].mean()
    return frame["n"].to_numpy(), frame["t"].to_numpy()


def _nnls_relative(design: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Non-negative coefficients minimising sum((design @ c) / t - 1)^2."""
    return nnls(design / t[:, None], np.ones_like(t))


def nnls(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """argmin ||a x - b|| subject to x >= 0, for the few columns of a scaling model.

    Exact by enumeration: the optimum is the least-squares solution on its own support, so the
    best of the non-negative least-squares solutions over every subset of columns is the
    optimum (2^k subsets of k <= 3 columns here; scipy.optimize's solver would cost the report
    more to import than the fits take).
    """
    k = a.shape[1]
    best, best_residual = np.zeros(k), float(np.sum(b * b))
    for mask in range(1, 2**k):
        columns = [j for j in range(k) if mask >> j & 1]
        x, *_ = np.linalg.lstsq(a[:, columns], b, rcond=None)
        if np.any(x < 0):
            continue
        residual = float(np.sum((a[:, columns] @ x - b) ** 2))
        if residual < best_residual - 1e-15 * max(1.0, best_residual):
            best = np.zeros(k)
            best[columns] = x
            best_residual = residual
    return best


def _too_few(model: str, points: str, n: np.ndarray) -> ModelFit | None:
    need = MIN_WORKER_COUNTS[model]
    if len(n) >= need:
        return None
    have = ", ".join(str(int(w)) for w in n) or "none"
    return ModelFit(
        model,
        points,
        [int(w) for w in n],
        message=f"too few points to fit: needs >= {need} distinct worker counts, "
        f"has {len(n)} ({have})",
    )


def fit_amdahl(workers, times, points: str = "all points") -> ModelFit:
    """Fit Amdahl's law to times (s) measured at worker counts (repeats are averaged)."""
    n, t = _distinct(workers, times)
    if (fit := _too_few("amdahl", points, n)) is not None:
        return fit
    a, b = _nnls_relative(np.column_stack([np.ones_like(n), 1.0 / n]), t)
    fit = ModelFit("amdahl", points, [int(w) for w in n])
    if a + b <= 0:
        fit.message = "no fit: the times are not consistent with the model"
        return fit
    t1, serial = a + b, a / (a + b)
    fit.fitted, fit.params = True, {"T1_s": float(t1), "serial_fraction": float(serial)}
    fit.best_n, fit.best_time_s = math.inf, float(t1 * serial)
    fit.max_speedup = math.inf if serial == 0 else 1.0 / serial
    fit.rmse_s = _rmse(fit, n, t)
    fit.message = _exact_note(n, 2, fit, t)
    return fit


def fit_usl(workers, times, points: str = "all points") -> ModelFit:
    """Fit the Universal Scalability Law to times (s) measured at worker counts."""
    n, t = _distinct(workers, times)
    if (fit := _too_few("usl", points, n)) is not None:
        return fit
    c0, c1, c2 = _nnls_relative(np.column_stack([1.0 / n, (n - 1.0) / n, n - 1.0]), t)
    fit = ModelFit("usl", points, [int(w) for w in n])
    if c0 <= 0:
        fit.message = "no fit: the times are not consistent with the model (T1 would be 0)"
        return fit
    a, b = c1 / c0, c2 / c0
    # Round-off of the solver: a term worth < 1e-9 of T1 over the measured range is zero.
    top = float(n.max())
    a = 0.0 if a * top < 1e-9 else a
    b = 0.0 if b * top * top < 1e-9 else b
    fit.fitted, fit.params = (
        True,
        {"T1_s": float(c0), "contention": float(a), "coherency": float(b)},
    )
    _usl_optimum(fit)
    fit.rmse_s = _rmse(fit, n, t)
    notes = [_exact_note(n, 3, fit, t)]
    if fit.best_workers is not None and fit.best_n > 2 * top:
        notes.append(
            f"the best worker count lies far beyond the measured {int(top)} (extrapolation)"
        )
    fit.message = "; ".join(m for m in notes if m)
    return fit


def _usl_optimum(fit: ModelFit) -> None:
    """Best worker count of a fitted USL: sqrt((1 - a) / b) when b > 0, none when b == 0."""
    t1, a, b = fit.params["T1_s"], fit.params["contention"], fit.params["coherency"]
    if a >= 1:  # contention alone already makes every added worker slower
        fit.best_n, fit.best_workers = 1.0, 1
    elif b > 0:
        fit.best_n = math.sqrt((1 - a) / b)
        candidates = {max(1, math.floor(fit.best_n)), max(1, math.ceil(fit.best_n))}
        fit.best_workers = min(candidates, key=lambda w: float(fit.predict(w)))
    else:  # b == 0: throughput rises toward 1/a, time falls toward T1 * a
        fit.best_n, fit.best_time_s = math.inf, t1 * a
        fit.max_speedup = math.inf if a == 0 else 1.0 / a
        return
    fit.best_time_s = float(fit.predict(fit.best_workers))
    fit.max_speedup = t1 / fit.best_time_s


def _rmse(fit: ModelFit, n: np.ndarray, t: np.ndarray) -> float:
    return float(np.sqrt(np.mean((fit.predict(n) - t) ** 2)))


def _exact_note(n: np.ndarray, parameters: int, fit: ModelFit, t: np.ndarray) -> str:
    """A warning when the model has as many parameters as points and so fits them exactly."""
    if len(n) == parameters and fit.rmse_s <= 1e-3 * float(np.mean(t)):
        return (
            f"{parameters} points for {parameters} parameters: the curve passes through them "
            "(no test of the model)"
        )
    return ""


def _point_sets(points: pd.DataFrame) -> dict[str, pd.DataFrame]:
    sets = {"all points": points}
    if points["oversubscribed"].any():
        sets["without oversubscribed"] = points[~points["oversubscribed"]]
    return sets


def _choose(model: str, sets: dict[str, pd.DataFrame], policy: str) -> tuple[str, str]:
    """(name of the reported point set, why) for one model under the policy."""
    over = sets["all points"]
    over_w = ", ".join(str(int(w)) for w in over.loc[over["oversubscribed"], "workers"])
    if "without oversubscribed" not in sets:
        return "all points", ""
    clean = sets["without oversubscribed"]["workers"].nunique()
    if policy == "include":
        return "all points", f"oversubscribed workers {over_w} included (policy include)"
    if policy == "exclude" or clean >= MIN_WORKER_COUNTS[model]:
        return "without oversubscribed", f"oversubscribed workers {over_w} left out"
    return "all points", (
        f"oversubscribed workers {over_w} included: only {clean} worker count(s) "
        f"are not oversubscribed, {MIN_WORKER_COUNTS[model]} needed"
    )


def fit_scaling(table: pd.DataFrame, policy: str = "auto") -> list[ScalingFit]:
    """Fit both models to each (setting, epochs) group of ``summarize``'s succeeded rows.

    ``policy``: ``auto`` leaves oversubscribed points out when enough others remain for the
    model, ``exclude`` always leaves them out, ``include`` always keeps them. Each model's
    ``points``/``message`` say what was used; the other point set's fits are in ``alternatives``.
    """
    if policy not in POLICIES:
        raise ValueError(f"policy={policy!r}: use one of {', '.join(POLICIES)}")
    if table.empty:
        return []
    fits = []
    ok = table[table["status"] == "succeeded"]
    for (setting, epochs), group in ok.groupby(["setting", "epochs"], sort=False):
        points = group[["workers", "time_total_s", "time_total_s_ci95", "n", "oversubscribed"]]
        points = points.astype({"workers": int}).sort_values("workers").reset_index(drop=True)
        sets = _point_sets(points)
        chosen, others = {}, []
        for model, fit_model in (("amdahl", fit_amdahl), ("usl", fit_usl)):
            name, why = _choose(model, sets, policy)
            for set_name, subset in sets.items():
                fit = fit_model(subset["workers"], subset["time_total_s"], points=set_name)
                if set_name == name:
                    fit.message = "; ".join(m for m in (why, fit.message) if m)
                    chosen[model] = fit
                else:
                    others.append(fit)
        fits.append(
            ScalingFit(setting, int(epochs), points, chosen["amdahl"], chosen["usl"], others)
        )
    return fits
