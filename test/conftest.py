"""Shared pytest set-up: make the repository importable when run from a source checkout."""

import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

import pytest  # noqa: E402

from ros_support import configure_process, remove_shm_entries, shm_entries  # noqa: E402

# Before anything can call rclpy.init: loopback-only discovery and a private domain.
configure_process()


@pytest.fixture(scope="session", autouse=True)
def _clean_dev_shm():
    """Remove Fast DDS shared-memory files that this session's (killed) processes left."""
    before = shm_entries()
    yield
    remove_shm_entries(shm_entries() - before)


def _initialised_context():
    import rclpy
    from rclpy.context import Context

    context = Context()
    rclpy.init(context=context)
    yield context
    context.try_shutdown()


@pytest.fixture()
def rclpy_context():
    """An initialised rclpy context, shut down after the test."""
    yield from _initialised_context()


@pytest.fixture(scope="module")
def module_rclpy_context():
    """An initialised rclpy context shared by one test module (its node processes' client)."""
    yield from _initialised_context()
