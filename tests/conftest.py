"""Shared pytest options: ``--backend`` reruns the backend-generic tests (those that take a
``backend`` argument) on any registered backend, the way VTA reruns its suite per target.

``pytest --backend pynq-sim`` runs them on the board driver against the Verilated model;
``pytest -m board --backend pynq --overlay rmsmp.bit`` on a PYNQ board. Without ``--backend``
they run on every registered backend except the board's (marked ``board``, deselected by
default).
"""

from __future__ import annotations

import pytest

from rmsmp.host import backends

BOARD_BACKENDS = frozenset({"pynq"})
"""Backends that need a PYNQ board: their cases carry the ``board`` marker."""


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--backend",
        action="append",
        default=[],
        metavar="NAME",
        help="run the backend-generic tests on this registered backend (repeatable; default: all)",
    )
    parser.addoption(
        "--overlay", default="rmsmp.bit", help="the overlay .bit the pynq backend loads (board)"
    )


def _explicitly_parametrized(metafunc: pytest.Metafunc) -> bool:
    for mark in metafunc.definition.iter_markers("parametrize"):
        names = mark.args[0]
        names = names.split(",") if isinstance(names, str) else names
        if "backend" in (n.strip() for n in names):
            return True
    return False


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "backend" not in metafunc.fixturenames or _explicitly_parametrized(metafunc):
        return
    known = backends.names()
    chosen = metafunc.config.getoption("backend") or known
    unknown = sorted(set(chosen) - set(known))
    if unknown:
        raise pytest.UsageError(f"--backend {', '.join(unknown)}: registered are {known}")
    params = [
        pytest.param(n, marks=pytest.mark.board if n in BOARD_BACKENDS else ()) for n in chosen
    ]
    metafunc.parametrize("backend", params)


@pytest.fixture
def backend_options(backend: str, request: pytest.FixtureRequest) -> dict:
    """Options the backend's factory needs here (the overlay's .bit on a board)."""
    return {"bitfile": request.config.getoption("overlay")} if backend in BOARD_BACKENDS else {}
