"""The HTTP edge: one request/response shape, the error→status table, route tables, platform adapters."""
