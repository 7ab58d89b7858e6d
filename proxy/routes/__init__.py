"""Thin HTTP handlers: parse, check access, ask the service, answer."""
