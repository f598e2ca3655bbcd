"""Prefect blocks: credentials for ATProto accounts and Letta."""
