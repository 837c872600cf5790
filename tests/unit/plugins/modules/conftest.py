# Copyright: pyweb.stack contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The modules' tests run each module in this process, as it runs on a managed host."""

from __future__ import annotations

import pytest
from ansible.module_utils import _internal


@pytest.fixture(autouse=True)
def as_on_a_managed_host(monkeypatch: pytest.MonkeyPatch) -> None:
    """A module's warnings go into its result on a managed host. Once a controller-side plugin (a filter's test) has
    been imported in the same pytest process, ansible-core would send them to the controller's display instead."""
    monkeypatch.setattr(_internal, "is_controller", False)
