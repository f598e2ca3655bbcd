"""Prefect tasks: small typed units of work with their retries on the decorator."""
