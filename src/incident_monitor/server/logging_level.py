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
    # The low-level server is private in MCPServer 2.3; this is the one place we reach into it.
    server._lowlevel_server.add_request_handler("logging/setLevel", SetLevelRequestParams, _set_level)
