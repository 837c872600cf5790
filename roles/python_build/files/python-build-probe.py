"""Probe of a CPython build, run by pyweb.stack.python_build with the built interpreter in isolated mode (-I).

argv[1] is a JSON object: module name -> the module whose import proves it was built (often its C part).
Prints one JSON object: version, prefix, the modules that failed to import (with the error), and OpenSSL.
"""

import importlib
import json
import platform
import sys


def failed_imports(probes):
    missing = {}
    for name, proof in probes.items():
        for module in dict.fromkeys([name, proof]):
            try:
                importlib.import_module(module)
            except Exception as exc:  # any import error means the module is unusable
                missing[name] = f"{module}: {exc}"
                break
    return missing


def openssl_details():
    try:
        ssl = importlib.import_module("ssl")
    except ImportError:
        return None
    major, minor, fix, patch, _status = ssl.OPENSSL_VERSION_INFO
    # OpenSSL 3 keeps the third field at 0 and counts patch releases in the fourth (3.0.13 is 3, 0, 0, 13).
    number = (major, minor, patch) if major >= 3 else (major, minor, fix)
    return {"version": ssl.OPENSSL_VERSION, "number": ".".join(str(part) for part in number)}


print(
    json.dumps(
        {
            "version": platform.python_version(),
            "prefix": sys.prefix,
            "executable": sys.executable,
            "missing": failed_imports(json.loads(sys.argv[1])),
            "openssl": openssl_details(),
        }
    )
)
