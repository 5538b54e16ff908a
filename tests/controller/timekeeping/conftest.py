"""The in-process station fixture of the supervisor tests, for the slave clock tests here."""

from tests.controller.supervisor.conftest import station  # noqa: F401 (a fixture)
