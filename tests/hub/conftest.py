"""Fixtures for the hub tests: one real classroom per module, torn down with its users."""

import os

import pytest
from classroom_fixture import shared_classroom


def _need_root():
    if os.geteuid() != 0:
        pytest.skip("the classroom tests create real Unix users (useradd): run them as root")


@pytest.fixture(scope="module")
def classroom(request):
    _need_root()
    return shared_classroom(request.config)


@pytest.fixture(autouse=True)
def _hub_log_on_failure(request):
    yield
    rep = getattr(request.node, "rep_call", None)
    if rep is not None and rep.failed and "classroom" in request.fixturenames:
        print(request.getfixturevalue("classroom").hub_log())


@pytest.hookimpl(hookwrapper=True, tryfirst=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    setattr(item, "rep_" + rep.when, rep)
