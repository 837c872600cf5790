#!/usr/bin/env bash
# Makes `ansible-test sanity --venv` work offline from its own file host: caches a pip bootstrap for it (see
# scripts/ansible-test-pip-bootstrap.py). Leaves a bootstrap script that is already cached untouched.
set -euo pipefail

python=${1:?usage: prepare-ansible-test.sh PYTHON}
here=$(cd "$(dirname "$0")" && pwd)

pip_version=$("$python" - <<'PY'
import inspect, re
from ansible_test._internal import python_requirements
print(re.search(r"pip='([^']+)'", inspect.getsource(python_requirements.get_venv_packages)).group(1))
PY
)
cache_dir="$HOME/.ansible/test/cache"
script="$cache_dir/get_pip_${pip_version//./_}.py"
[[ -s "$script" ]] && exit 0

mkdir -p "$cache_dir"
"$python" -m pip download --quiet --disable-pip-version-check --no-deps --only-binary=:all: \
    --dest "$cache_dir" "pip==$pip_version"
wheels=("$cache_dir/pip-$pip_version-"*.whl)
sed "s/@PIP_WHEEL@/$(basename "${wheels[0]}")/" "$here/ansible-test-pip-bootstrap.py" > "$script.tmp"
mv "$script.tmp" "$script"
echo "prepare-ansible-test: cached a pip $pip_version bootstrap for ansible-test at $script"
