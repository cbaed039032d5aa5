import pytest

from gradwatch.labs.base import one_thread


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    # The labs' small models run faster on one thread on a shared 2-core machine.
    with one_thread():
        yield
