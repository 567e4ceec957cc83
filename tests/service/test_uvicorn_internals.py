"""The uvicorn internals ``service/server.py`` relies on, read from its docstring, all still exist.

A uvicorn release that renames one of them must fail here, loudly, rather than leave a server
whose deadlines, lingering close or shutdown silently stopped working.
"""

from __future__ import annotations

import inspect
import re

import pytest
import uvicorn
from uvicorn.protocols.http import httptools_impl

from iweblens.service import server

OWNERS = {
    "HttpToolsProtocol": httptools_impl.HttpToolsProtocol,
    "RequestResponseCycle": httptools_impl.RequestResponseCycle,
    "httptools_impl": httptools_impl,
    "Server": uvicorn.Server,
    "ServerState": uvicorn.server.ServerState,
}
RELIED_ON = re.findall(r"``(\w+)\.(\w+)``", (server.__doc__ or "").split("relies on", 1)[-1])


def test_the_docstring_lists_what_is_relied_on() -> None:
    assert len(RELIED_ON) >= 20
    assert {owner for owner, _ in RELIED_ON} == set(OWNERS)


@pytest.mark.parametrize(("owner", "name"), RELIED_ON, ids=[".".join(n) for n in RELIED_ON])
def test_each_name_still_exists(owner: str, name: str) -> None:
    """A class attribute or method, a module attribute, or an instance attribute its code sets."""
    target = OWNERS[owner]
    if hasattr(target, name):
        return
    source = inspect.getsource(target)
    assert re.search(rf"self\.{name}\s*(:[^=]+)?=", source), (
        f"uvicorn {uvicorn.__version__} has no {owner}.{name}: service/server.py relies on it"
    )
