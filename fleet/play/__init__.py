"""Playbooks (`fleet play`): plays of typed operations over inventories; see operations.py."""
