"""The guard for downstream MCP servers: their allowlisted read tools are re-exposed, everything else refused.

``connections`` holds the sessions (connect at start, list tools, refresh, reconnect); ``guard`` decides
what a called name is and makes the governed call or the audited refusal.
"""
