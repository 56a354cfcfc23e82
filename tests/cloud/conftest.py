"""Session servers: Azurite and moto on loopback, started here and stopped at the end."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from .servers import free_port, start_azurite, wait_port


@pytest.fixture(scope="session")
def azurite(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    proc, port = start_azurite(tmp_path_factory.mktemp("azurite"))
    yield port
    proc.terminate()
    proc.wait(10)


@pytest.fixture(scope="session")
def moto_s3() -> Iterator[int]:
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    wait_port(port)
    yield port
    server.stop()
