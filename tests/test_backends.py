"""Backend-generic tests: the same bodies on every registered backend (see conftest.py).

Each opens its device through the backend registry, as the runtime does, and compares integers
with the numpy reference of the graph.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from graphgen import random_graph

from rmsmp.arch import AccelConfig
from rmsmp.compiler.lower import lower
from rmsmp.host import backends
from rmsmp.host.errors import AcceleratorError, ConfigMismatchError
from rmsmp.host.program import Program, Segment
from rmsmp.host.runtime import run_with_stats

TINY = AccelConfig.preset("tiny")
SPECS = [
    dict(kind="conv", n=12, kernel=3, stride=1, padding=1),
    dict(kind="conv", n=10, kernel=3, stride=2, padding=1),
    dict(kind="linear", n=7, flatten=True, lo=-128, hi=127),
]


@pytest.fixture(scope="module")
def chain():
    rng = np.random.default_rng(7)
    graph = random_graph(rng, TINY, (5, 6, 6), SPECS)
    program = lower(graph, TINY, batch=2)
    x = rng.integers(graph.input_lo, graph.input_hi + 1, size=(3, 5, 6, 6)).astype(np.int16)
    return graph, program, x


@pytest.fixture
def dev(chain, backend: str, backend_options: dict):
    """A fresh device of ``backend`` for ``TINY``, opened through the registry."""
    d = backends.open_backend(backend, TINY, 2 * chain[1].window_size, **backend_options)
    yield d
    d.close()


def test_conv_chain_is_bit_exact(chain, dev) -> None:
    """Two batch chunks (3 samples, batch 2) of a conv-conv-linear chain: the device's
    integers equal the graph's numpy reference, and the run is placed on that device."""
    graph, program, x = chain
    res = run_with_stats(program, x, device=dev)
    assert np.array_equal(res.output, graph.evaluate(x.astype(np.int64)))
    assert {where for _, where in res.placement} == {"host", dev.name}


def test_program_for_other_hardware_is_refused(chain, dev) -> None:
    """A Program compiled for another config (hash) is refused before anything runs."""
    graph, _, x = chain
    other = dataclasses.replace(TINY, watchdog_cycles=TINY.watchdog_cycles * 2)
    with pytest.raises(ConfigMismatchError) as e:
        run_with_stats(lower(graph, other, batch=2), x, device=dev)
    assert other.hash in str(e.value) and TINY.hash in str(e.value)


def test_illegal_instruction_ends_with_error_status(chain, dev) -> None:
    """An instruction word of zeros: the run ends with ILLEGAL_OPCODE at that PC and layer."""
    _, program, x = chain
    n = TINY.insn_bits // 8
    # an instruction of the second pass (hoisted loads interleave the passes' instructions)
    pc = next(i for i in range(program.insn_count) if program.pass_at(i).name == "l1") + 1
    assert program.pass_at(pc).name == "l1"
    data = bytearray(program.segments["insn"].data)
    data[pc * n : (pc + 1) * n] = bytes(n)
    segments = {**program.segments, "insn": Segment(0, data)}
    with pytest.raises(AcceleratorError) as e:
        run_with_stats(Program(**{**program.__dict__, "segments": segments}), x, device=dev)
    assert (e.value.code, e.value.pc, e.value.layer) == ("ILLEGAL_OPCODE", pc, "l1")
