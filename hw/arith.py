"""Small arithmetic helpers that keep narrow or constant products out of the DSP48s."""

from __future__ import annotations

from amaranth import Const, Mux, Value


def log2_exact(n: int) -> int:
    """log2 of a power of two (a shift that replaces a multiply or divide by ``n``)."""
    if n < 1 or n & (n - 1):
        raise ValueError(f"{n} is not a power of two")
    return n.bit_length() - 1


def small_mul(a: Value, b: Value | int) -> Value:
    """``a * b`` as a sum of shifted copies of ``a``: one per set bit of a constant ``b``, or one
    (selected by that bit) per bit of a narrow ``b``, added as a balanced tree (n terms, about
    log2(n) carry chains deep)."""
    if isinstance(b, int):
        if b < 0:
            raise ValueError(f"small_mul takes a non-negative constant, got {b}")
        terms = [a << i for i in range(b.bit_length()) if b >> i & 1]
    else:
        terms = [Mux(b[i], a << i, 0) for i in range(len(b))]
    if not terms:
        return Const(0, 1)
    while len(terms) > 1:
        pairs = [terms[i] + terms[i + 1] for i in range(0, len(terms) - 1, 2)]
        terms = pairs + terms[len(terms) - len(terms) % 2 :]
    return terms[0]
