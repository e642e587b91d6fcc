"""Backend-specific fast paths for the hot operations of a step, chosen by the backend table.

Every kernel object has the same small interface:

- ``linear(X, W, b)``: ``X @ W + b`` (``b`` may be None); ``linear_grad(dY, W)``: ``dY @ W.T``,
  its input gradient;
- ``matmul(A, B, out)`` / ``sum_rows(A, out)``: ``A @ B`` / ``sum(A, axis=0)``, written into
  ``out`` when given (a view of the flat gradient buffer);
- ``sgd_(p, g, lr)``: ``p -= lr * g`` in place (mutable backends only);
- ``square_average_(s, g, keep, take)`` / ``divide_step_(p, g, d, lr)``: ``s = keep s +
  take g^2`` / ``p -= lr g / d`` in place, the two halves of the adaptive optimizers'
  updates (RMSprop, Adagrad, AMSGrad);
- ``all_finite(value, arrays)``: the divergence guard's check, one float read;
- ``relu``/``relu_grad``: None, or a fused ReLU and its gradient; the layer's own array-API
  maths (in ``nn/layers.py``) runs where it is None;
- ``losses``: fused loss-and-gradient overrides by loss name; the loss's own maths (in
  ``nn/losses.py``) runs for every name not listed.

``for_step()`` gives the kernels one ``Step`` trains with. On NumPy that is a copy holding a
``Workspace`` (``workspace.py``): between the step's ``start`` and ``stop`` the temporaries
above (layer outputs, input gradients, the ReLU mask, the loss's exponentials) are written
into arrays no longer in use instead of new ones. The shared kernels (``backend.kernels``,
what ``predict`` and ``evaluate`` use) have none and always return fresh arrays.

``Portable`` is the reference: array API calls only, so it runs on every backend, with no
overrides and no reuse. The others do the same maths with what one library offers beyond
the standard (``out=``, ``addmm``, ``threshold_backward``, fused CuPy kernels) and are proven
equal to the portable path by ``tests/test_fast.py``. Which one a backend gets is a column of the
backend table (``table.py``); ``xn.fast_paths(False)`` gives every backend ``Portable``.
"""

from __future__ import annotations

import copy
import math
import threading
from collections.abc import Callable
from typing import Any

import numpy as np

from .workspace import SOUND, Workspace


class Portable:
    """Array API only: the reference every fast path must match."""

    name = "portable"

    def __init__(self, xp, inplace: bool):
        self.xp, self.inplace = xp, inplace

    def linear(self, X, W, b):
        """``X @ W + b`` (``b`` None: no bias)."""
        Y = X @ W
        if b is None:
            return Y
        if self.inplace:  # Y is ours: add the bias without a second (batch, n_out) array
            Y += b
            return Y
        return Y + b

    def linear_grad(self, dY, W):
        """``dY @ W.T``: the gradient of ``linear`` with respect to ``X``."""
        return dY @ W.T

    workspace: Workspace | None = None  # a step's reused arrays (see for_step); None: fresh

    def for_step(self) -> Portable:
        """The kernels one ``Step`` trains with: these; the libraries that reuse a step's
        temporaries return a copy with a ``Workspace`` of its own."""
        return self

    def _out(self, shape: tuple, like, other=None):
        """Where an op whose result has ``shape`` and ``like``'s dtype may write: an array
        of the step's workspace, or None (a fresh array) outside a step, without one, or
        when ``other``'s dtype differs (writing into ``out`` would then cast)."""
        ws = self.workspace
        if ws is None or not ws.active or (other is not None and other.dtype != like.dtype):
            return None
        return ws.take(shape, like.dtype, like)

    # Optional overrides: a subclass defines them as methods; None: the layer's (or the
    # optimizer's) own maths runs.
    relu: Callable[..., Any] | None = None  # fused ReLU (X, overwrite) -> Y
    relu_grad: Callable[..., Any] | None = None  # fused ReLU gradient (dY, Y) -> dX
    adam_: Callable[..., Any] | None = None  # fused in-place Adam update

    @property
    def losses(self) -> dict:
        """Fused ``(Z, T) -> (loss, dZ)`` overrides by loss name (none on the portable path)."""
        return {}

    def matmul(self, A, B, out=None):
        """``A @ B``, written into ``out`` when given."""
        if out is None:
            return A @ B
        out[...] = A @ B
        return out

    def gather(self, A, rows, out=None):
        """The rows ``rows`` (an index array) of ``A``, written into ``out`` where the
        library can (a batch's rows into last batch's array); a new array otherwise."""
        return self.xp.take(A, rows, axis=0)

    def sum_rows(self, A, out=None):
        """``sum(A, axis=0)``, written into ``out`` when given."""
        if out is None:
            return self.xp.sum(A, axis=0)
        out[...] = self.xp.sum(A, axis=0)
        return out

    def sgd_(self, p, g, lr: float):
        """``p -= lr * g`` in place; returns ``p``."""
        p -= lr * g
        return p

    def square_average_(self, s, g, keep: float, take: float):
        """``s = keep s + take g^2`` in place (one temporary); returns ``s``."""
        t = g * g
        if take != 1.0:
            t *= take
        if keep != 1.0:
            s *= keep
        s += t
        return s

    def divide_step_(self, p, g, d, lr: float):
        """``p -= lr * (g / d)`` in place (one temporary); returns ``p``."""
        t = g / d
        t *= lr
        p -= t
        return p

    def all_finite(self, value, arrays) -> bool:
        """True when the 0-d ``value`` and every array hold only finite numbers.

        One read of a summed total answers for everything (NaN and Inf survive a sum). As
        finite values can overflow a sum, a non-finite total is checked again on ``a * 0``
        (0 for finite entries, NaN for NaN or Inf): that is only paid when training diverges.
        """
        arrays = list(arrays)
        if math.isfinite(self._total(value, arrays)):
            return True
        total = value * 0.0
        for a in arrays:
            total = total + self.xp.sum(a * 0.0)
        return math.isfinite(float(total))

    def _total(self, value, arrays) -> float:
        total = value
        for a in arrays:
            total = total + self.xp.sum(a)
        return float(total)



class _Mutable(Portable):
    """What every library that writes in place shares: the softmax cross-entropy gradient
    formed in the exponentials' own array (one array instead of three)."""

    @property
    def losses(self) -> dict:
        return {"cross_entropy": self.cross_entropy}

    def cross_entropy(self, Z, T):
        """Batch mean of -sum(T log softmax(Z)) and its gradient (softmax(Z) - T) / n."""
        xp = self.xp
        n = Z.shape[0]
        S = Z - xp.max(Z, axis=1, keepdims=True)
        E = xp.exp(S)
        total = xp.sum(E, axis=1, keepdims=True)
        # -sum T (S - log total) without forming log softmax: T's row sums weight log total
        loss = (xp.sum(xp.log(total) * xp.sum(T, axis=1, keepdims=True)) - xp.sum(T * S)) / n
        return loss, self._ce_grad(E, total, T, 1.0 / n)

    def _ce_grad(self, E, total, T, inv_n):
        E /= total  # E is ours
        E -= T
        E *= inv_n
        return E


class NumPyKernels(_Mutable):
    """NumPy: ``out=`` writes in place, so no temporaries for ReLU and the update."""

    name = "numpy"
    _CHUNK = 1 << 16  # elements per block of the update: the scratch stays in L2 cache

    def __init__(self, xp, inplace: bool):
        super().__init__(xp, inplace)
        self._local = threading.local()  # one scratch per thread: kernels are shared
        self._ones_cache: dict = {}  # read-only ones vectors by (length, dtype)

    def for_step(self) -> NumPyKernels:
        if not SOUND:  # reference counts decide reuse: only exact with the GIL
            return self
        scoped = copy.copy(self)  # shares the per-thread update scratch and the ones cache
        scoped.workspace = Workspace(lambda shape, dtype, like: np.empty(shape, dtype))
        return scoped

    def _buffer(self, dtype):
        buf = getattr(self._local, "buf", None)
        if buf is None or buf.dtype != dtype:
            buf = self._local.buf = np.empty(self._CHUNK, dtype)
        return buf

    def _total(self, value, arrays) -> float:
        # A matrix times a ones vector runs in BLAS (gemv): 2.7x faster than np.sum here
        # (measured 25 vs 67 us on 784x512 float32); NaN and Inf propagate the same way.
        total = float(value)
        for a in arrays:
            if a.ndim == 1 and a.size >= self._CHUNK and a.flags.c_contiguous:
                rows = a.size // 1024 * 1024  # a flat buffer: its bulk as a matrix, then the tail
                total += float(np.add.reduce(a[rows:]))
                a = a[:rows].reshape(-1, 1024)
            if a.ndim == 2 and a.size >= self._CHUNK and a.flags.c_contiguous:
                a = a @ self._ones(a.shape[1], a.dtype)
            total += float(np.add.reduce(a, axis=None))
        return total

    def _ones(self, n, dtype):
        ones = self._ones_cache.get((n, dtype))
        if ones is None:
            ones = self._ones_cache[(n, dtype)] = np.ones(n, dtype)
        return ones

    def linear(self, X, W, b):
        Y = np.matmul(X, W, out=self._out(X.shape[:-1] + (W.shape[1],), X, W))
        if b is not None:
            Y += b
        return Y

    def linear_grad(self, dY, W):
        return np.matmul(dY, W.T, out=self._out(dY.shape[:-1] + (W.shape[0],), dY, W))

    def matmul(self, A, B, out=None):
        return np.matmul(A, B, out=out)

    def gather(self, A, rows, out=None):
        return np.take(A, rows, axis=0, out=out)

    def sum_rows(self, A, out=None):
        # the ufunc's own reduce: np.sum's Python wrapper costs more than a small sum
        return np.add.reduce(A, axis=0, out=out)

    def cross_entropy(self, Z, T):
        """The softmax cross-entropy of ``_Mutable``, with the ufuncs' own reductions: a
        small step makes eight of them, and each np.sum/np.max wrapper costs ~3 us. In a step
        the (batch, classes) temporaries are workspace arrays (the (batch, 1) ones cost less
        to make than to look up); the loss itself is always a new scalar."""
        n, shape = Z.shape[0], Z.shape
        S = np.subtract(Z, np.maximum.reduce(Z, axis=1, keepdims=True), out=self._out(shape, Z))
        E = np.exp(S, out=self._out(shape, Z))
        total = np.add.reduce(E, axis=1, keepdims=True)
        weights = np.add.reduce(T, axis=1, keepdims=True)
        TS = np.multiply(T, S, out=self._out(shape, Z, T))
        loss = (np.add.reduce(np.log(total) * weights, axis=None)
                - np.add.reduce(TS, axis=None)) / n
        return loss, self._ce_grad(E, total, T, 1.0 / n)

    def relu(self, X, overwrite: bool = False):
        return np.maximum(X, 0.0, out=X if overwrite else self._out(X.shape, X))

    def relu_grad(self, dY, Y):
        ws = self.workspace  # the mask too: a bool array as large as the batch's activations
        mask = ws.take(Y.shape, np.bool_, Y) if ws is not None and ws.active else None
        mask = np.greater(Y, 0, out=mask)
        return np.multiply(dY, mask, out=self._out(dY.shape, dY, Y))

    def sgd_(self, p, g, lr: float):
        if p.size <= self._CHUNK or not (p.flags.c_contiguous and g.flags.c_contiguous):
            p -= lr * g
            return p
        flat_p, flat_g, buf = p.reshape(-1), g.reshape(-1), self._buffer(p.dtype)
        for lo in range(0, flat_p.size, self._CHUNK):  # blockwise: no full-size temporary
            part = flat_g[lo:lo + self._CHUNK]
            scaled = np.multiply(part, lr, out=buf[: part.size])
            flat_p[lo:lo + self._CHUNK] -= scaled
        return p

    def adam_(self, p, g, m, v, b1, b2, step, root_correction, eps, decay):
        """Adam's in-place update blockwise, with two cache-sized scratch arrays: one pass
        over p, g, m and v instead of a full-size temporary per operation."""
        arrays = (p, g, m, v)
        if not all(a.flags.c_contiguous for a in arrays):
            arrays = tuple(np.ascontiguousarray(a) for a in arrays)  # rare: copies, then back
            self.adam_(*arrays, b1, b2, step, root_correction, eps, decay)
            for target, done in zip((p, m, v), (arrays[0], arrays[2], arrays[3]), strict=True):
                target[...] = done
            return p
        t, u = self._buffer(p.dtype), self._scratch(p.dtype)
        if p.size <= self._CHUNK:  # one block: no slicing at all
            self._adam_block(p, g, m, v, t[: p.size].reshape(p.shape),
                             u[: p.size].reshape(p.shape), b1, b2, step, root_correction, eps,
                             decay)
            return p
        flat = [a.reshape(-1) for a in arrays]
        for lo in range(0, flat[0].size, self._CHUNK):
            pc, gc, mc, vc = (a[lo:lo + self._CHUNK] for a in flat)
            self._adam_block(pc, gc, mc, vc, t[: pc.size], u[: pc.size], b1, b2, step,
                             root_correction, eps, decay)
        return p

    @staticmethod
    def _adam_block(p, g, m, v, t, u, b1, b2, step, root_correction, eps, decay):
        """One block of Adam in place, with scratch ``t`` and ``u``: 12 ufunc calls.

        The same maths as ``Adam.update``, with ``step / root_correction`` folded:
        ``p -= step * m / (sqrt(v) / rc + eps) = (step * rc) * m / (sqrt(v) + eps * rc)``.
        """
        np.subtract(g, m, out=t)  # m = b1 m + (1 - b1) g = m + (1 - b1) (g - m)
        t *= 1.0 - b1
        m += t
        np.multiply(g, g, out=t)  # v = v + (1 - b2) (g g - v)
        t -= v
        t *= 1.0 - b2
        v += t
        if decay != 1.0:
            p *= decay
        np.sqrt(v, out=u)
        u += eps * root_correction
        np.divide(m, u, out=u)
        u *= step * root_correction
        p -= u

    def _scratch(self, dtype):
        buf = getattr(self._local, "scratch", None)
        if buf is None or buf.dtype != dtype:
            buf = self._local.scratch = np.empty(self._CHUNK, dtype)
        return buf


class TorchKernels(_Mutable):
    """torch: fused ``addmm``, ``relu_``, ``threshold_backward`` and ``add_(alpha=)``."""

    name = "torch"

    def __init__(self, xp, inplace: bool, torch):
        super().__init__(xp, inplace)
        self.torch = torch
        self._local = threading.local()  # one update scratch per thread: kernels are shared

    def linear(self, X, W, b):
        if b is None:
            return X @ W
        return self.torch.addmm(b, X, W)

    def matmul(self, A, B, out=None):
        return self.torch.matmul(A, B, out=out) if out is not None else A @ B

    def gather(self, A, rows, out=None):
        return self.torch.index_select(A, 0, rows, out=out) if out is not None \
            else self.torch.index_select(A, 0, rows)

    def sum_rows(self, A, out=None):
        return self.torch.sum(A, dim=0, out=out) if out is not None else self.torch.sum(A, 0)

    def relu(self, X, overwrite: bool = False):
        return self.torch.relu_(X) if overwrite else self.torch.relu(X)

    def relu_grad(self, dY, Y):
        # torch.where with a scalar costs ~25x this on CPU (measured: 513 vs 22 us, 256x512)
        return self.torch.ops.aten.threshold_backward(dY, Y, 0.0)

    def sgd_(self, p, g, lr: float):
        return p.add_(g, alpha=-lr)

    def square_average_(self, s, g, keep: float, take: float):
        if keep != 1.0:
            s.mul_(keep)
        return s.addcmul_(g, g, value=take)  # no g^2 temporary

    def divide_step_(self, p, g, d, lr: float):
        return p.addcdiv_(g, d, value=-lr)  # no g / d temporary

    def adam_(self, p, g, m, v, b1, b2, step, root_correction, eps, decay):
        """Adam in place with torch's fused ``addcmul_``/``addcdiv_``; the denominator is
        written into this thread's scratch, not a new parameter-sized array per step."""
        m.mul_(b1).add_(g, alpha=1.0 - b1)
        v.mul_(b2).addcmul_(g, g, value=1.0 - b2)
        if decay != 1.0:
            p.mul_(decay)
        denom = self.torch.sqrt(v, out=self._scratch(v)).div_(root_correction).add_(eps)
        if not isinstance(step, float):  # a device scalar (a CUDA graph's step count)
            return p.sub_(m.div(denom).mul_(step))
        return p.addcdiv_(m, denom, value=-step)

    def _scratch(self, like):
        """This thread's array shaped like ``like``, for a value that never leaves one
        update: the last shape asked for is kept (a step updates one flat buffer)."""
        key = (like.shape, like.dtype, like.device)
        kept = getattr(self._local, "scratch", None)
        if kept is None or kept[0] != key:
            kept = self._local.scratch = (key, self.torch.empty_like(like))
        return kept[1]


class CuPyKernels(_Mutable):
    """CuPy: one fused elementwise kernel per operation (fewer launches, one pass each).

    No workspace (``for_step`` is the shared kernels): CuPy's memory pool already hands a
    freed block back without a device allocation, and reuse has not been run on a GPU.
    """

    name = "cupy"

    def __init__(self, xp, inplace: bool, cupy):
        super().__init__(xp, inplace)
        self.cp = cupy
        self._bias_add = cupy.ElementwiseKernel("T b", "T y", "y += b", "xpnet_bias_add")
        self._relu_grad = cupy.ElementwiseKernel(
            "T dy, T y", "T dx", "dx = y > (T)0 ? dy : (T)0", "xpnet_relu_grad")
        self._axpy = cupy.ElementwiseKernel("T g, T lr", "T p", "p -= lr * g", "xpnet_sgd")
        self._ce_grad_kernel = cupy.ElementwiseKernel(
            "T e, T total, T t, T inv_n", "T d", "d = (e / total - t) * inv_n", "xpnet_ce_grad")

    def linear(self, X, W, b):
        Y = X @ W
        if b is not None:
            self._bias_add(b, Y)
        return Y

    def matmul(self, A, B, out=None):
        return self.cp.matmul(A, B, out=out)

    def gather(self, A, rows, out=None):
        return self.cp.take(A, rows, axis=0, out=out)

    def sum_rows(self, A, out=None):
        return self.cp.sum(A, axis=0, out=out)

    def relu(self, X, overwrite: bool = False):
        return self.cp.maximum(X, 0, out=X if overwrite else None)

    def relu_grad(self, dY, Y):
        return self._relu_grad(dY, Y)

    def sgd_(self, p, g, lr: float):
        self._axpy(g, p.dtype.type(lr), p)
        return p

    def _ce_grad(self, E, total, T, inv_n):
        # a fresh (batch, classes) output: small, and no input/output aliasing to reason about
        return self._ce_grad_kernel(E, total, T, E.dtype.type(inv_n))


__all__ = ["Portable", "NumPyKernels", "TorchKernels", "CuPyKernels"]
