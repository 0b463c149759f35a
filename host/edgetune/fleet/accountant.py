"""(ε, δ) of the central Gaussian mechanism without sampling amplification, for Flower's DP wrapper
(RDP, composed over rounds), and the exact calibration of one Gaussian release (the refit mode's
DP release; `gaussian_noise_for`, at the end).

Flower 1.42's `DifferentialPrivacyServerSideFixedClipping` accepts any object with the
`flwr.supercore.privacy_accounting.PrivacyAccountant` protocol; its own `RdpAccountant` needs
the `dp-accounting` package, which is not installed here. This one implements the same protocol
for the only case the wrapper accounts (sampling_method "no-amplification"): every release is a
Gaussian mechanism of noise multiplier z on a mean of m clipped client updates, so one client
changes the sum by at most C (add-or-remove-one) or 2C (replace-one) and the Rényi DP of order α
of a release is α Δ² / (2 z²) with Δ = 1 or 2 (in units of C). Releases add up. Conversion to
(ε, δ) (Balle et al. 2020, Prop. 12, the one dp-accounting uses):

    ε = min over α > 1 of  RDP(α) + log((α - 1) / α) - (log δ + log α) / (α - 1)

over the orders 1.01 ... 1024 (a dense grid). No sampling amplification is claimed: with
client sampling the true ε is smaller, the reported one an upper bound.
"""

from __future__ import annotations

import math

import numpy as np
from flwr.supercore.privacy_accounting import (
    GaussianPrivacyEvent,
    NeighboringRelation,
    PrivacyConfig,
    PrivacySpent,
    SamplingMethod,
)

ORDERS = np.concatenate([np.linspace(1.01, 10, 900), np.linspace(10.1, 100, 900), np.linspace(101, 1024, 500)])


class GaussianRdpAccountant:
    def __init__(self, config: PrivacyConfig):
        if config.sampling_method is not SamplingMethod.NO_AMPLIFICATION:
            raise ValueError("GaussianRdpAccountant accounts sampling_method='no-amplification' only")
        self._config = config
        self._rdp = np.zeros_like(ORDERS)
        self._n = 0

    @property
    def config(self) -> PrivacyConfig:
        return self._config

    @property
    def num_releases(self) -> int:
        return self._n

    def _sens(self) -> float:
        return 2.0 if self._config.neighboring_relation is NeighboringRelation.REPLACE_ONE else 1.0

    def _event_rdp(self, event: GaussianPrivacyEvent, count: int) -> np.ndarray:
        z = float(event.noise_multiplier)
        if not (z > 0 and math.isfinite(z)):
            raise ValueError("the noise multiplier must be a positive finite number")
        if count < 1:
            raise ValueError("count must be >= 1")
        return count * ORDERS * self._sens() ** 2 / (2 * z * z)

    def compose(self, event: GaussianPrivacyEvent, count: int = 1) -> None:
        self._rdp = self._rdp + self._event_rdp(event, count)
        self._n += count

    @staticmethod
    def _eps(rdp: np.ndarray, delta: float) -> tuple[float, float]:
        if not (0 < delta < 1):
            raise ValueError("delta must be in (0, 1)")
        a = ORDERS
        eps = rdp + np.log((a - 1) / a) - (math.log(delta) + np.log(a)) / (a - 1)
        i = int(np.argmin(eps))
        return max(0.0, float(eps[i])), float(a[i])

    def get_epsilon(self, delta: float) -> float:
        return self._eps(self._rdp, delta)[0] if self._n else 0.0

    def get_delta(self, epsilon: float) -> float:
        if self._n == 0:
            return 0.0
        a = ORDERS
        # δ = min over α of exp((α-1)(RDP - ε) + (α-1) log(1 - 1/α) - log α) (same bound, solved for δ)
        logd = (a - 1) * (self._rdp - epsilon) + (a - 1) * np.log1p(-1 / a) - np.log(a)
        return float(min(1.0, math.exp(float(np.min(logd)))))

    def get_privacy_spent(self, delta: float | None = None) -> PrivacySpent:
        d = self._config.target_delta if delta is None else delta
        eps, order = self._eps(self._rdp, d) if self._n else (0.0, None)
        return PrivacySpent(epsilon=eps, delta=d, num_releases=self._n, accounting_method="rdp-gaussian",
                            optimal_order=order)

    def would_exceed(self, event: GaussianPrivacyEvent, max_epsilon: float | None = None, count: int = 1) -> bool:
        lim = self._config.max_epsilon if max_epsilon is None else max_epsilon
        if lim is None:
            raise ValueError("max_epsilon must be given in PrivacyConfig or to would_exceed()")
        return self._eps(self._rdp + self._event_rdp(event, count), self._config.target_delta)[0] > lim

    def state_dict(self) -> dict[str, object]:
        return {"rdp": self._rdp.tolist(), "n": self._n}

    def load_state_dict(self, state: dict[str, object]) -> None:
        self._rdp = np.asarray(state["rdp"], float)
        self._n = int(state["n"])


def accountant(population: int, delta: float = 1e-5) -> GaussianRdpAccountant:
    return GaussianRdpAccountant(PrivacyConfig(target_delta=delta, population_size=population,
                                               neighboring_relation=NeighboringRelation.ADD_OR_REMOVE_ONE,
                                               sampling_method=SamplingMethod.NO_AMPLIFICATION))


def noise_for(epsilon: float, rounds: int, delta: float = 1e-5) -> float:
    """The smallest noise multiplier (to 1e-3) whose `rounds` releases stay within epsilon."""
    lo, hi = 0.05, 200.0
    for _ in range(60):
        mid = (lo + hi) / 2
        if epsilon_for(mid, rounds, delta) > epsilon:
            lo = mid
        else:
            hi = mid
    return math.ceil(hi * 1000) / 1000


def epsilon_for(z: float, rounds: int = 1, delta: float = 1e-5) -> float:
    """The epsilon of `rounds` releases at noise multiplier z (add-or-remove-one unit)."""
    acc = accountant(1, delta)
    acc.compose(GaussianPrivacyEvent(noise_multiplier=z, sample_size=1, population_size=1), rounds)
    return float(acc.get_epsilon(delta))


# One Gaussian release, calibrated exactly (the refit mode's DP release, refit_dp.py). The RDP
# conversion above is an upper bound that is loose for a single release; for one Gaussian
# mechanism the (ε, δ) curve is known in closed form (Balle & Wang 2018, Theorem 8): with noise
# multiplier z (σ / Δ), it is (ε, δ)-DP iff
#     Φ(1 / (2z) - ε z) - e^ε Φ(-1 / (2z) - ε z) <= δ.
# Same guarantee, add-or-remove-one, about 6 % less noise at ε = 8, δ = 1e-5 (z 0.600 vs 0.638).


def _log_phi(x: float) -> float:
    """log Φ(x), finite far into the lower tail (erfc underflows past x ≈ -38)."""
    v = 0.5 * math.erfc(-x / math.sqrt(2.0))
    if v > 0.0:
        return math.log(v)
    return -0.5 * x * x - math.log(-x) - 0.5 * math.log(2 * math.pi)  # Mills-ratio asymptote


def gaussian_delta(epsilon: float, z: float) -> float:
    """The smallest δ for which one Gaussian release of noise multiplier z is (ε, δ)-DP."""
    if not (z > 0 and math.isfinite(z)) or not (epsilon >= 0 and math.isfinite(epsilon)):
        raise ValueError(f"need z > 0 and epsilon >= 0, got z={z!r}, epsilon={epsilon!r}")
    a, b = 1.0 / (2.0 * z), epsilon * z
    d = math.exp(_log_phi(a - b)) - math.exp(epsilon + _log_phi(-a - b))
    return max(0.0, d)


def gaussian_noise_for(epsilon: float, delta: float = 1e-5) -> float:
    """The smallest noise multiplier (to 1e-3, rounded up) for one (ε, δ)-DP Gaussian release."""
    if not (0 < delta < 1) or not (epsilon > 0 and math.isfinite(epsilon)):
        raise ValueError(f"need epsilon > 0 and delta in (0, 1), got {epsilon!r}, {delta!r}")
    lo, hi = 1e-3, 1e4
    for _ in range(100):
        mid = math.sqrt(lo * hi)
        if gaussian_delta(epsilon, mid) > delta:
            lo = mid
        else:
            hi = mid
    return math.ceil(hi * 1000) / 1000


def gaussian_epsilon_for(z: float, delta: float = 1e-5) -> float:
    """The smallest ε of one Gaussian release of noise multiplier z at δ."""
    if not (0 < delta < 1):
        raise ValueError(f"delta must be in (0, 1), got {delta!r}")
    if gaussian_delta(0.0, z) <= delta:
        return 0.0
    lo, hi = 0.0, 1.0
    while gaussian_delta(hi, z) > delta:
        hi *= 2
    for _ in range(100):
        mid = (lo + hi) / 2
        if gaussian_delta(mid, z) > delta:
            lo = mid
        else:
            hi = mid
    return hi
