"""Fixtures the testinfra tests of every molecule scenario may use (other helpers: shared/pyweb_molecule.py)."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="module")
def address(host) -> str:
    """The test host's address, as a client outside the host (this controller) reaches it."""
    return host.check_output("hostname -I").split()[0]
