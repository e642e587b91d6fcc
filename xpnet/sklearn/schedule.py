"""scikit-learn's learning-rate schedules for ``solver="sgd"``, applied to an xpnet optimizer.

``learning_rate`` is one of:

- ``"constant"``: ``learning_rate_init`` throughout;
- ``"invscaling"``: after each epoch, ``learning_rate_init / (t_ + 1) ** power_t``, where
  ``t_`` counts the training samples seen so far (scikit-learn's count: every row of every
  epoch, partial fits included);
- ``"adaptive"``: ``learning_rate_init`` while training improves; each time the
  no-improvement count passes ``n_iter_no_change`` (the loss failing to fall by ``tol``, or
  the validation score failing to rise by it), the rate is divided by 5 instead of stopping,
  and training stops once the rate is at most 1e-6.

scikit-learn's own docstring says "two consecutive epochs" for "adaptive"; its code (and so
this module) counts to ``n_iter_no_change``, whose default is 10.

Adam ignores ``learning_rate``, as in scikit-learn.
"""

from __future__ import annotations

__all__ = ["LEARNING_RATES", "SMALLEST_ADAPTIVE_RATE", "Schedule", "set_rate"]

LEARNING_RATES = ("constant", "invscaling", "adaptive")
SMALLEST_ADAPTIVE_RATE = 1e-6  # scikit-learn stops rather than go below it


class Schedule:
    """The learning rate of one estimator's optimizer, changed between epochs."""

    def __init__(self, kind: str, learning_rate_init: float, power_t: float, stochastic_gd: bool):
        self.kind = kind if stochastic_gd else "constant"
        self.init, self.power_t = float(learning_rate_init), float(power_t)

    def epoch_ends(self, optimizer, samples_seen: int) -> None:
        """After an epoch: the inverse scaling step, as scikit-learn's ``iteration_ends``."""
        if self.kind == "invscaling":
            set_rate(optimizer, self.init / (samples_seen + 1) ** self.power_t)

    def stalled(self, optimizer) -> bool:
        """Training stopped improving: lower the rate (True: keep training) or stop (False)."""
        if self.kind != "adaptive" or optimizer.lr <= SMALLEST_ADAPTIVE_RATE:
            return False
        set_rate(optimizer, optimizer.lr / 5.0)
        return True


def set_rate(optimizer, lr: float) -> None:
    """Change the optimizer's rate, keeping scikit-learn's momentum meaning.

    scikit-learn's velocity holds rate-scaled gradients (``v = m v - lr g``), torch's (and
    so xpnet's) buffer unscaled ones (``p -= lr buf``); rescaling the buffer by
    ``old / new`` makes the next update exactly scikit-learn's.
    """
    old = optimizer.lr
    if lr == old:
        return
    state = optimizer.state_arrays()
    if state:
        optimizer.load_state_arrays({k: v * (old / lr) for k, v in state.items()},
                                    optimizer.iterations)
    optimizer.lr = lr
