"""Outbound HTTP under one set of rules: every connection the monitor opens (destinations, JWKS) goes through here.

``rules`` decides (no I/O, cheap to import); ``transport`` connects (httpx2/httpcore2, imported on first use).
"""
