"""Test-wide settings: hypothesis profiles sized for a 2-core CI machine.

`HYPOTHESIS_PROFILE=thorough` explores more examples locally; CI uses `ci`.
"""

import os

import pytest
from hypothesis import HealthCheck, settings

settings.register_profile(
    "ci",
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    derandomize=True,
)
settings.register_profile("thorough", max_examples=300, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


# `make test` installs every backend and both environments, so there a skip can only mean
# something broke: KF_REQUIRE_ALL=1 turns every skip into a failure that names its reason.
REQUIRE_ALL = os.environ.get("KF_REQUIRE_ALL") == "1"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if REQUIRE_ALL and report.skipped and not hasattr(report, "wasxfail"):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        report.outcome = "failed"
        report.longrepr = f"skipped under KF_REQUIRE_ALL=1 (make test installs everything): {reason}"
