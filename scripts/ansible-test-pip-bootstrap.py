"""Stand-in for the pip bootstrap script ansible-test runs in each new sanity virtualenv.

ansible-test downloads its get-pip script from a file host of its own, which CI here cannot reach. It looks for the
script in its cache first, so scripts/prepare-ansible-test.sh puts this file there instead, next to the official
pip wheel fetched from PyPI. It does the same job: install the requested packages with that pip.
"""

import os
import runpy
import sys

PIP_WHEEL = os.path.join(os.path.dirname(os.path.abspath(__file__)), "@PIP_WHEEL@")

# get-pip's own options: it installs setuptools and wheel unless told not to; plain pip installs only what is named.
GET_PIP_ONLY_OPTIONS = {"--no-setuptools", "--no-wheel"}

sys.path.insert(0, PIP_WHEEL)
sys.argv = ["pip", "install", "--upgrade", "--force-reinstall"] + [
    a for a in sys.argv[1:] if a not in GET_PIP_ONLY_OPTIONS
]
runpy.run_module("pip", run_name="__main__", alter_sys=True)
