"""Fixtures for the offline Kubernetes tests (helpers live in k8s_support.py)."""

import k8s_support
import pytest


@pytest.fixture(scope="session")
def z2jh_defaults():
    return k8s_support.z2jh_defaults()


@pytest.fixture
def merged(z2jh_defaults):
    """(wrapper values, subchart values) for the shipped layers: base + gpu + example site."""
    values = k8s_support.load_values_with_site()
    return values, k8s_support.layers.subchart_values(values, z2jh_defaults)
