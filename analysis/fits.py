"""Curve fits with bootstrap confidence intervals over seeds.

(a) Size to solve: accuracy against log10(size) as a logistic rising from chance to 1,
    `acc(x) = c + (1 - c) * sigmoid(k * (x - x0))`, x = log10(size); the size to solve is where the
    curve reaches the target accuracy (0.9 by default).
(b) Loss scaling: `L(N) = E + A / N**alpha`, fitted in log space (residual `log L_hat - log L`) with a
    Huber loss, multi-start L-BFGS over a grid of initialisations (Hoffmann et al. 2022, App. D.2).

Bootstrap: each replicate resamples the observations (seeds) within every size with replacement, so
every size stays represented; a replicate is a weighted refit of the same points. Replicates are
refitted together, warm-started from the point estimate, with a vectorised Levenberg-Marquardt on
the same objective (iteratively reweighted for the Huber loss), which keeps 1 000 resamples well
under a second. With a single observation per size there is nothing to resample: the CI is NaN.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy.optimize import minimize
from scipy.special import expit, logit

N_BOOT = 1000
LEVEL = 0.95

_SLOPE_BOUNDS = (0.05, 50.0)  # logistic slope per decade of size
_ALPHA_BOUNDS = (1e-3, 3.0)
POLISHED_STARTS = 3


@dataclass(frozen=True)
class SolveFit:
    """Logistic size-to-solve fit; sizes are in the units passed in (parameters or state elements).

    `status` is "fit" when the seed-mean accuracy crosses the target inside the sizes tried,
    "below range" when every size already reaches it, "above range" when none does; outside "fit"
    the size is an extrapolation and the report says so instead of printing it.
    """

    chance: float
    target: float
    x0: float  # log10 size at the logistic midpoint
    slope: float  # per decade of size
    ci_low: float  # size at target, CI bounds (NaN with one observation per size)
    ci_high: float
    status: str
    size_min: float
    size_max: float
    boot: np.ndarray  # [R, 2] replicate (x0, slope)

    @property
    def size(self) -> float:
        return float(10 ** _solve_x(self.x0, self.slope, self.chance, self.target))

    def predict(self, sizes) -> np.ndarray:
        return _logistic(np.log10(np.asarray(sizes, dtype=float)), self.x0, self.slope, self.chance)

    def band(self, sizes, level: float = LEVEL) -> tuple[np.ndarray, np.ndarray]:
        x = np.log10(np.asarray(sizes, dtype=float))
        curves = _logistic(x[None, :], self.boot[:, :1], self.boot[:, 1:], self.chance)  # [R, S]
        return _percentiles(curves, level)


@dataclass(frozen=True)
class PowerLawFit:
    """`L(N) = E + A / N**alpha` with percentile bootstrap CIs (NaN with one observation per size)."""

    E: float
    A: float
    alpha: float
    ci: dict[str, tuple[float, float]]
    n_min: float
    n_max: float
    boot: np.ndarray  # [R, 3] replicate (log E, log A, alpha)

    def predict(self, n) -> np.ndarray:
        return np.exp(
            _log_power_law(np.log(np.asarray(n, dtype=float)), np.log(self.E), np.log(self.A), self.alpha)
        )

    def band(self, n, level: float = LEVEL) -> tuple[np.ndarray, np.ndarray]:
        log_n = np.log(np.asarray(n, dtype=float))
        curves = np.exp(_log_power_law(log_n[None, :], *(self.boot[:, i : i + 1] for i in range(3))))
        return _percentiles(curves, level)


def fit_size_to_solve(
    sizes,
    accuracy,
    chance: float,
    target: float = 0.9,
    n_boot: int = N_BOOT,
    seed: int = 0,
    level: float = LEVEL,
) -> SolveFit:
    """Fit accuracy (one value per run: per seed and size) against log10(size); see the module doc."""
    sizes = np.asarray(sizes, dtype=float)
    accuracy = np.asarray(accuracy, dtype=float)
    _check_points(sizes, accuracy, minimum=2, what="size-to-solve")
    if not 0.0 <= chance < target < 1.0:
        raise ValueError(f"target: must lie between chance ({chance}) and 1, got {target}")
    x = np.log10(sizes)
    lower = np.array([x.min() - 3.0, np.log(_SLOPE_BOUNDS[0])])
    upper = np.array([x.max() + 3.0, np.log(_SLOPE_BOUNDS[1])])

    def residuals(theta):  # theta [R, 2] = (x0, log slope)
        x0, slope = theta[:, :1], np.exp(theta[:, 1:])
        s = expit(slope * (x[None, :] - x0))  # [R, n]
        ds = (1.0 - chance) * s * (1.0 - s)
        jac = np.stack([-ds * slope, ds * slope * (x[None, :] - x0)], axis=-1)  # [R, n, 2]
        return chance + (1.0 - chance) * s - accuracy[None, :], jac

    grid = np.array(
        [(x0, np.log(k)) for x0 in np.linspace(x.min() - 1, x.max() + 1, 9) for k in (0.5, 2.0, 8.0)]
    )
    starts, costs = _levenberg_marquardt(residuals, grid, np.ones((len(grid), len(x))), lower, upper)
    best = starts[np.argmin(costs)]
    boot = _bootstrap(residuals, best, sizes, lower, upper, n_boot, seed)
    boot_params = np.column_stack([boot[:, 0], np.exp(boot[:, 1])])

    means = [accuracy[sizes == s].mean() for s in np.unique(sizes)]
    status = "below range" if min(means) >= target else "above range" if max(means) < target else "fit"
    ci_low = ci_high = np.nan
    if len(boot_params):
        solve = 10 ** _solve_x(boot_params[:, 0], boot_params[:, 1], chance, target)
        ci_low, ci_high = _percentiles(solve, level)
    return SolveFit(
        chance=float(chance),
        target=float(target),
        x0=float(best[0]),
        slope=float(np.exp(best[1])),
        ci_low=float(ci_low),
        ci_high=float(ci_high),
        status=status,
        size_min=float(sizes.min()),
        size_max=float(sizes.max()),
        boot=boot_params,
    )


def fit_power_law(
    n,
    loss,
    n_boot: int = N_BOOT,
    seed: int = 0,
    delta: float = 1e-2,
    level: float = LEVEL,
) -> PowerLawFit:
    """Fit `L(N) = E + A / N**alpha` to losses (one per run: per seed and size); see the module doc.

    `delta` is the Huber threshold on log-loss residuals: misfits beyond 1 % count linearly, so a
    single bad seed cannot drag the curve.
    """
    n = np.asarray(n, dtype=float)
    loss = np.asarray(loss, dtype=float)
    _check_points(n, loss, minimum=3, what="loss scaling (3 parameters)")
    if (loss <= 0).any():
        raise ValueError("loss: the power-law fit works in log space and needs positive losses")
    log_n, log_loss = np.log(n), np.log(loss)
    lower = np.array([log_loss.min() - 12.0, -20.0, _ALPHA_BOUNDS[0]])
    upper = np.array([log_loss.max() + 1.0, 80.0, _ALPHA_BOUNDS[1]])

    def objective(theta):
        r, jac = residuals(theta[None, :])
        rho, psi = _huber(r[0], delta)
        return rho.sum(), (psi[:, None] * jac[0]).sum(axis=0)

    def residuals(theta):  # theta [R, 3] = (log E, log A, alpha)
        e, a, alpha = theta[:, :1], theta[:, 1:2], theta[:, 2:]
        pred = _log_power_law(log_n[None, :], e, a, alpha)  # [R, n]
        share_e = np.exp(e - pred)
        jac = np.stack([share_e, 1.0 - share_e, -(1.0 - share_e) * log_n[None, :]], axis=-1)  # [R, n, 3]
        return pred - log_loss[None, :], jac

    smallest = loss[n == n.min()].mean()
    starts = []
    for e_frac in (0.05, 0.5, 0.9):
        e0 = np.log(e_frac * loss.min())
        for alpha0 in (0.1, 0.3, 0.6, 1.0, 2.0):
            for a_scale in (0.3, 1.0, 3.0):
                a0 = np.log(a_scale * max(smallest - np.exp(e0), 1e-6 * smallest)) + alpha0 * np.log(n.min())
                starts.append(np.clip([e0, a0, alpha0], lower, upper))
    # Every start is refined at once by the vectorised solver; L-BFGS-B then polishes the best few
    # distinct ones (cheap: a handful of scalar optimisations rather than one per grid point).
    refined, costs = _levenberg_marquardt(
        residuals, np.array(starts), np.ones((len(starts), len(n))), lower, upper, delta
    )
    bounds = list(zip(lower, upper))
    polished = [
        minimize(objective, refined[i], jac=True, method="L-BFGS-B", bounds=bounds)
        for i in _distinct_best(refined, costs, POLISHED_STARTS)
    ]
    best = min(polished, key=lambda result: result.fun).x

    boot = _bootstrap(residuals, best, n, lower, upper, n_boot, seed, delta=delta)
    ci = {}
    for i, name in enumerate(("E", "A", "alpha")):
        values = np.exp(boot[:, i]) if name != "alpha" else boot[:, i]
        ci[name] = tuple(float(v) for v in _percentiles(values, level)) if len(boot) else (np.nan, np.nan)
    return PowerLawFit(
        E=float(np.exp(best[0])),
        A=float(np.exp(best[1])),
        alpha=float(best[2]),
        ci=ci,
        n_min=float(n.min()),
        n_max=float(n.max()),
        boot=boot,
    )


def _distinct_best(theta: np.ndarray, costs: np.ndarray, k: int) -> list[int]:
    """Indices of the k lowest-cost solutions, skipping near-duplicates of ones already taken."""
    chosen: list[int] = []
    for i in np.argsort(costs):
        if all(np.abs(theta[i] - theta[j]).max() > 1e-3 for j in chosen):
            chosen.append(int(i))
        if len(chosen) == k:
            break
    return chosen


def _check_points(x: np.ndarray, y: np.ndarray, minimum: int, what: str) -> None:
    if x.shape != y.shape or x.ndim != 1:
        raise ValueError(f"{what}: sizes and values must be 1-D of one length, got {x.shape} and {y.shape}")
    if not (np.isfinite(x).all() and np.isfinite(y).all() and (x > 0).all()):
        raise ValueError(f"{what}: sizes must be positive and values finite")
    distinct = len(np.unique(x))
    if distinct < minimum:
        raise ValueError(f"{what}: needs values at >= {minimum} distinct sizes, got {distinct}")


def _logistic(x, x0, slope, chance):
    return chance + (1.0 - chance) * expit(slope * (x - x0))


def _solve_x(x0, slope, chance, target):
    return x0 + logit((target - chance) / (1.0 - chance)) / slope


def _log_power_law(log_n, e, a, alpha):
    return np.logaddexp(e, a - alpha * log_n)


def _huber(r: np.ndarray, delta: float) -> tuple[np.ndarray, np.ndarray]:
    """Huber loss and its derivative."""
    small = np.abs(r) <= delta
    rho = np.where(small, 0.5 * r**2, delta * (np.abs(r) - 0.5 * delta))
    psi = np.where(small, r, delta * np.sign(r))
    return rho, psi


def _percentiles(values: np.ndarray, level: float) -> tuple[np.ndarray, np.ndarray]:
    tail = 50.0 * (1.0 - level)
    return np.percentile(values, tail, axis=0), np.percentile(values, 100.0 - tail, axis=0)


def _bootstrap(
    residuals: Callable,
    best: np.ndarray,
    sizes: np.ndarray,
    lower: np.ndarray,
    upper: np.ndarray,
    n_boot: int,
    seed: int,
    delta: float | None = None,
) -> np.ndarray:
    """Refit `n_boot` seed resamples (stratified by size) from the point estimate; [R, P] parameters."""
    groups = [np.flatnonzero(sizes == s) for s in np.unique(sizes)]
    if all(len(group) < 2 for group in groups) or n_boot < 1:
        return np.empty((0, len(best)))
    rng = np.random.default_rng(seed)
    weights = np.zeros((n_boot, len(sizes)))
    for group in groups:
        weights[:, group] = rng.multinomial(len(group), np.full(len(group), 1.0 / len(group)), size=n_boot)
    theta, _ = _levenberg_marquardt(
        residuals, np.repeat(best[None, :], n_boot, axis=0), weights, lower, upper, delta
    )
    return theta


def _levenberg_marquardt(
    residuals: Callable,
    theta: np.ndarray,
    weights: np.ndarray,
    lower: np.ndarray,
    upper: np.ndarray,
    delta: float | None = None,
    iterations: int = 150,
) -> tuple[np.ndarray, np.ndarray]:
    """Minimise sum_i w_ri * rho(r_i(theta_r)) for R problems at once; rho is r^2/2 or Huber(delta).

    Box bounds are kept by clipping each step. A problem drops out of the batch once a step no
    longer lowers its cost measurably, so the cost of a batch follows its slowest members only.
    Returns the parameters [R, P] and costs [R].
    """

    def evaluate(theta, weights):
        r, jac = residuals(theta)  # [R, n], [R, n, P]
        if delta is None:
            rho, omega = 0.5 * r**2, np.ones_like(r)
        else:
            rho, psi = _huber(r, delta)
            omega = np.where(np.abs(r) <= delta, 1.0, psi / np.where(r == 0, 1.0, r))
        return r, jac, (weights * rho).sum(axis=1), weights * omega

    theta = np.array(theta, dtype=float)
    r, jac, cost, w = evaluate(theta, weights)
    costs = cost.copy()
    active = np.arange(len(theta))
    damping = np.full(len(theta), 1e-3)
    eye = np.eye(theta.shape[1])
    for _ in range(iterations):
        gradient = np.einsum("rn,rnp->rp", w * r, jac)
        hessian = np.einsum("rnp,rnq->rpq", w[:, :, None] * jac, jac)
        diagonal = np.einsum("rpp->rp", hessian)
        system = hessian + damping[:, None, None] * (diagonal[:, :, None] * eye + 1e-9 * eye)
        step = np.linalg.solve(system, -gradient[:, :, None])[:, :, 0]
        candidate = np.clip(theta[active] + step, lower, upper)
        r_new, jac_new, cost_new, w_new = evaluate(candidate, weights[active])
        better = cost_new < cost
        tiny = (cost - cost_new <= 1e-10 * (1.0 + cost)) | (np.abs(step).max(axis=1) < 1e-9)
        settled = np.where(better, tiny, damping >= 1e5)
        theta[active] = np.where(better[:, None], candidate, theta[active])
        r = np.where(better[:, None], r_new, r)
        jac = np.where(better[:, None, None], jac_new, jac)
        w = np.where(better[:, None], w_new, w)
        cost = np.where(better, cost_new, cost)
        costs[active] = cost
        damping = np.clip(np.where(better, damping / 3.0, damping * 4.0), 1e-9, 1e9)
        keep = ~settled
        if not keep.any():
            break
        active, r, jac, w, cost, damping = (
            active[keep],
            r[keep],
            jac[keep],
            w[keep],
            cost[keep],
            damping[keep],
        )
    return theta, costs
