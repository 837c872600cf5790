"""`--check --diff` of converge.yml, on the host as converge and idempotence left it, changes nothing."""

from pyweb_molecule import assert_check_diff_changes_nothing, run_converge


def test_check_diff_after_converge_changes_nothing() -> None:
    assert_check_diff_changes_nothing(run_converge("--check", "--diff"))
