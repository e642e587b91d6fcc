"""scikit-learn's MLP objective on top of xpnet's losses: its loss scales and its L2 term.

scikit-learn's losses differ from xpnet's (PyTorch's reductions) by constant factors per
output count ``k``; both the loss value and its gradient are scaled to match, so a learning
rate means the same in both:

- binary and multilabel: the logistic loss summed over the labels, averaged over samples
  (xpnet's ``binary_cross_entropy`` averages over labels too: times ``k``);
- multiclass: the batch mean of the cross entropy (xpnet's ``cross_entropy`` as it is);
- regression: ``loss_curve_`` reports half the mean squared error over all elements, while
  the gradient is that of half the squared error summed over outputs (scikit-learn's
  ``delta = y_pred - y``): value times 1/2, gradient times ``k / 2``.

Sample weights enter as in scikit-learn: each batch's loss is ``sum_i w_i l_i / sum_i w_i``
(the step's weighted loss), and the L2 term ``alpha / 2 * sum(W**2)`` is divided by the
batch's ``sum_i w_i`` (its row count without weights).
"""

from __future__ import annotations

from ..nn import losses

__all__ = ["L2Penalty", "LOSSES"]


def _scaled(name: str, value_scale, grad_scale) -> losses.Loss:
    base = losses.resolve(name)

    def fn(xp, Y, T, weights=None):
        value, dY = base.fn(xp, Y, T, weights)
        k = Y.shape[1]
        return value * value_scale(k), dY * grad_scale(k)

    # its own name: a backend's fused variant of the base loss would skip the scaling
    return losses.Loss(f"sklearn_{name}", fn, base.classification)


LOSSES = {
    "softmax": losses.resolve("cross_entropy"),
    "logistic": _scaled("binary_cross_entropy", float, float),
    "identity": _scaled("mse", lambda k: 0.5, lambda k: k / 2.0),
}


class L2Penalty:
    """scikit-learn's L2 term as a gradient hook of the step: ``alpha / denominator`` times
    each weight matrix (not the biases) added to its gradient, where ``denominator`` (set
    before each step) is the batch's row count or its sum of sample weights. The term
    ``alpha / (2 denominator) * sum(W**2)`` is added to the batch's loss (``step.value``),
    as scikit-learn adds it to the loss it reports."""

    def __init__(self, alpha: float, xp):
        self.alpha, self.xp, self.denominator = float(alpha), xp, 1.0

    def __call__(self, grads: dict, step) -> dict:
        scale = self.alpha / self.denominator
        squares = []
        out = dict(grads)
        for name, W in step.model.parameters.arrays.items():
            if name.endswith(".W"):
                out[name] = grads[name] + scale * W
                squares.append(self.xp.sum(W * W))
        step.value = step.value + (0.5 * scale) * sum(squares[1:], squares[0])
        return out
