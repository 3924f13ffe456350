"""Clients of the voice server: the browser page (web/) and the Python client (python/)."""
