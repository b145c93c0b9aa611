"""``logging/setLevel``: accepted (and the ``logging`` capability advertised) on every transport.

MCPServer has no hook for it (see the SDK notes), so the handler goes on its low-level server.
The monitor sends no log notifications today, so there is nothing to filter yet: the request is
acknowledged with ``{}`` as the protocol requires.
"""

from __future__ import annotations

import logging
from typing import Any

from mcp.server import MCPServer
from mcp.server.context import ServerRequestContext
from mcp.types import EmptyResult, SetLevelRequestParams

logger = logging.getLogger(__name__)


async def _set_level(ctx: ServerRequestContext[Any, Any], params: SetLevelRequestParams) -> EmptyResult:
    logger.debug("client asked for log level %s", params.level)
    return EmptyResult()


def accept_logging_level(server: MCPServer) -> None:
    # The one private SDK attribute in src/, kept to this function: mcp 2.3 has no public way. MCPServer takes no
    # handler for a spec method; an extension's MethodBinding refuses spec methods (its docstring sends
    # `logging/setLevel` to the low-level `Server.add_request_handler`); a middleware could answer the request but
    # the `logging` capability is advertised only for a registered handler, so it would have to rewrite the
    # initialize result. The SDK reaches in the same way (mcp/client/_memory.py: "TODO: Make `lowlevel_server`
    # public"). Use the public accessor once MCPServer has one.
    server._lowlevel_server.add_request_handler("logging/setLevel", SetLevelRequestParams, _set_level)
