"""Hypothesis strategies shared by the property tests: model shapes and bounded, finite float arrays.

Profiles (dev: fast; ci: derandomised, no example database, more examples) are registered in
conftest.py and chosen by HYPOTHESIS_PROFILE.

Shapes follow the reference's names: B batch, T time (T <= block_size), C n_embd (a multiple of
n_head), NH n_head, HS head size, V vocab. They are kept small on purpose: every array element is
drawn by hypothesis (so it can shrink a failure to a readable one), and its buffer holds a few
hundred floats at most.
"""
from typing import NamedTuple

import numpy
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp


class Dims(NamedTuple):
    B: int
    T: int            # <= block_size
    C: int            # n_head * HS
    n_head: int
    block_size: int
    vocab_size: int

    @property
    def HS(self):
        return self.C // self.n_head

    def config(self, n_layer=1):
        """The contract's config dict for a model of these dims."""
        return {"vocab_size": self.vocab_size, "block_size": self.block_size, "n_layer": n_layer,
                "n_head": self.n_head, "n_embd": self.C}


@st.composite
def dims(draw, max_batch=2, max_block=6, max_head=2, max_head_size=4, min_vocab=2, max_vocab=12,
         min_embd=1):
    """B, T, C, n_head with C divisible by n_head, C >= min_embd and 1 <= T <= block_size.
    (A whole model wants min_embd=3: a LayerNorm of 2 features maps every row to +-1, so every
    gradient through it is ~eps/var, nothing but rounding.)"""
    n_head = draw(st.integers(1, max_head))
    min_head_size = -(-min_embd // n_head)                          # ceil(min_embd / n_head)
    HS = draw(st.integers(min_head_size, max(max_head_size, min_head_size)))
    block_size = draw(st.integers(1, max_block))
    T = draw(st.integers(1, block_size))
    B = draw(st.integers(1, max_batch))
    V = draw(st.integers(min_vocab, max_vocab))
    return Dims(B=B, T=T, C=n_head * HS, n_head=n_head, block_size=block_size, vocab_size=V)


# The smallest magnitude drawn besides 0: sqrt of the smallest normal float64, so that no product of
# two drawn numbers is subnormal either (a gradient times a 1e-308 dout loses all its digits).
TINY = 2.0 ** -511     # 1.5e-154


def finite_floats(bound=10.0):
    """Float64 scalars in [-bound, bound]: never NaN or inf, and 0 or at least TINY in magnitude, so
    never subnormal (nor are their pairwise products)."""
    return st.floats(-bound, bound, allow_nan=False, allow_infinity=False, allow_subnormal=False,
                     width=64).filter(lambda v: v == 0.0 or abs(v) >= TINY)


def positive_floats(lo, hi):
    return st.floats(lo, hi, allow_nan=False, allow_infinity=False, allow_subnormal=False, width=64)


def float_arrays(shape, bound=10.0):
    """float64 arrays of `shape` whose every element is drawn independently in [-bound, bound] (no
    fill value, so no array is mostly one repeated number), finite and never subnormal."""
    return hnp.arrays(numpy.float64, shape, elements=finite_floats(bound), fill=st.nothing())


def small_int_arrays(shape, bound=8):
    """Float64 arrays of small integers: every sum of their products is exact in float64, so a test on
    them may demand bit-for-bit equality whatever the order of summation."""
    return hnp.arrays(numpy.float64, shape, elements=st.integers(-bound, bound).map(float),
                      fill=st.nothing())


def token_ids(shape, vocab_size):
    """int64 token ids in [0, vocab_size)."""
    return hnp.arrays(numpy.int64, shape, elements=st.integers(0, vocab_size - 1), fill=st.nothing())


seeds = st.integers(0, 2**32 - 1)


def random_params(module, config, seed, weight_std=None, dtype="float64"):
    """A contract module's `init`, then every 1-D parameter (LayerNorm gains, biases) perturbed by
    N(0, 0.1) so that none of them is trivially 1 or 0, and optionally every 2-D weight scaled by
    weight_std / 0.02 (GPT-2's std 0.02 becomes weight_std; c_proj keeps its 1/sqrt(2 n_layer)) so
    that attention is far from uniform. Random but reproducible from `seed`."""
    params = module.init(config, seed, numpy, dtype)
    rng = numpy.random.Generator(numpy.random.PCG64([seed, 7]))
    for name in params:
        p = params[name]
        if p.ndim == 1:
            params[name] = (p + rng.normal(0.0, 0.1, p.shape)).astype(dtype)
        elif weight_std is not None:
            params[name] = (p * (weight_std / 0.02)).astype(dtype)
    return params
