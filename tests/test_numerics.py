"""The requant parameters the lowering derives for pooling and copies are exact."""

import numpy as np
import pytest

from rmsmp.arch import numerics

COUNTS = [*range(1, 50), 64, 81, 100, 121, 144, 169, 196, 225]
"""Window sizes of every pool up to 7x7, and global pools of maps up to 15x15."""


@pytest.mark.parametrize("count", COUNTS)
def test_average_requant_is_average_round_on_every_total(count):
    bias, mult, shift = numerics.average_requant(count)
    t = np.arange(-256 * count, 256 * count + 1)
    got = numerics.requant(t, bias, mult, shift, -(1 << 40), 1 << 40)
    assert np.array_equal(got, numerics.average_round(t, count))


def test_identity_requant_returns_the_accumulator():
    t = np.arange(-(1 << 20), 1 << 20, 7)
    assert np.array_equal(numerics.requant(t, *numerics.IDENTITY_REQUANT, -(1 << 40), 1 << 40), t)


def test_average_requant_refuses_an_empty_window():
    with pytest.raises(ValueError, match="count"):
        numerics.average_requant(0)
