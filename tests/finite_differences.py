"""The one finite-difference gradient checker of the test suite (test_gradients.py, test_properties.py).

Finite differences, float64 central differences of a scalar objective:

    fd_i = (L(x + h e_i) - L(x - h e_i)) / ((x_i + h) - (x_i - h)),

the denominator being the step actually taken in float64. L is either the objective's own scalar
value (`dout=None`) or <dout, f(x)> for an array-valued f, then computed as sum(dout * (f(x + h e_i) -
f(x - h e_i))) so that outputs a perturbation does not move contribute exactly nothing.

Which entries: `entries(shape)` is every entry of a tensor; `entries(shape, n, rng)` is n distinct
entries drawn by rng (every entry, without drawing, when the tensor has n or fewer).

Error measure, per checked entry i (one formula for both files):

    err_i = |fd_i - an_i| / max(|fd_i|, |an_i|, floor),   and every err_i must be < tol (NaN never passes).

The floor chooses what the error is relative to:
- a fixed small floor (test_gradients.py: 1e-3) makes it an elementwise relative error, with entries
  below the floor held to an absolute |fd_i - an_i| < tol * floor;
- floor = max(max|an| over the WHOLE analytic tensor, max_i |fd_i|) (`normwise_floor`) makes it the
  normwise error max_i |fd_i - an_i| / max(max|an|, max|fd|) of test_properties.py: that floor is at
  least every |fd_i| and |an_i|, so the max() is the floor itself. (fl(w / s) < tol implies
  w <= fl(tol * s) for floats w, s > 0, since rounding is monotone: the strict `<` here is at least as
  strict as the `worst <= tol * scale` that test_properties.py used before.)
"""
import numpy as np

H = 1e-5                                  # the step, both files
EPS64 = float(np.finfo(np.float64).eps)


def entries(shape, n=None, rng=None):
    """Index tuples: every entry of `shape` when n is None, else n distinct entries drawn by rng
    (rng.choice without replacement over the flat indices), or every entry, without drawing, when the
    tensor has n entries or fewer."""
    size = int(np.prod(shape))
    if n is None or size <= n:
        return list(np.ndindex(*shape))
    flat = rng.choice(size, size=n, replace=False)
    return [tuple(int(j) for j in np.unravel_index(int(k), shape)) for k in flat]


def central_differences(f, x, at, dout=None, size=None, h=H):
    """Central differences of the objective at each index in `at`, perturbing x in place (and restoring
    it). f() -> a scalar objective when dout is None, else an array whose <dout, f()> is the objective.

    With `size` (broadcastable to f's output, the magnitude at which f rounds each output; dout needed)
    also returns, per entry, an estimate of the rounding noise in fd_i: eps * sum(|dout| size over the
    outputs that moved, at least the largest one) / h. Returns fd, or (fd, noise)."""
    fd, noise = np.empty(len(at)), np.empty(len(at))
    weight = None if size is None else np.abs(dout) * size
    for n, i in enumerate(at):
        old = x[i]
        x[i] = up = old + h
        f_up = f() if dout is None else np.array(f(), dtype=np.float64)
        x[i] = down = old - h
        f_down = f() if dout is None else np.array(f(), dtype=np.float64)
        x[i] = old
        diff = f_up - f_down if dout is None else float((dout * (f_up - f_down)).sum())
        fd[n] = diff / (up - down)
        if weight is not None:
            # the outputs that moved; at least the largest one, in case the move vanished in rounding
            moved = max(float(weight[f_up != f_down].sum()), float(weight.max()))
            noise[n] = EPS64 * moved / h
    return fd if size is None else (fd, noise)


def gradient_errors(fd, an, floor):
    """|fd - an| / max(|fd|, |an|, floor), elementwise (NaN stays NaN)."""
    fd, an = np.asarray(fd, dtype=np.float64), np.asarray(an, dtype=np.float64)
    return np.abs(fd - an) / np.maximum(np.maximum(np.abs(fd), np.abs(an)), floor)


def normwise_floor(an_whole, fd):
    """The floor that makes gradient_errors normwise: max(max|an| over the whole analytic tensor,
    max|fd|) (NaN if either holds a NaN)."""
    return float(np.max([np.abs(an_whole).max(initial=0.0), np.abs(fd).max(initial=0.0)]))


def assert_gradient_close(name, fd, an, *, tol, floor, at=None, h=H):
    """Fail, naming the tensor and its worst entry, unless every gradient_errors(fd, an, floor) is < tol
    (NaN never passes). `at`: the entries, for the message. Returns the largest error."""
    fd, an = np.ravel(fd), np.ravel(an)
    assert fd.shape == an.shape, f"{name}: {fd.shape} finite differences vs {an.shape} analytic"
    err = gradient_errors(fd, an, floor)
    worst = int(np.argmax(np.where(np.isnan(err), np.inf, err))) if err.size else 0
    if err.size and not err[worst] < tol:
        where = at[worst] if at is not None else worst
        raise AssertionError(
            f"{name}: gradient error {err[worst]:.3e} >= tol {tol:.0e} at entry {where}: "
            f"finite difference {fd[worst]:.17g}, analytic {an[worst]:.17g} "
            f"(error = |fd - an| / max(|fd|, |an|, {floor:g}); h = {h:g}; "
            f"{int(np.sum(~(err < tol)))} of {err.size} entries fail)")
    return float(err.max()) if err.size else 0.0
