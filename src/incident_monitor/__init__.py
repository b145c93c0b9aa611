"""incident-monitor-mcp: an Incident Monitor exposed as governed MCP tools."""

__version__ = "0.1.0"
