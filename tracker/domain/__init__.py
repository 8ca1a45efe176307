"""Business rules shared by the API (in the edge), the `tracker` CLI and the forwarder.

Messages and their link tables, rendering, HTML links, profile fields, API keys,
SMS short links, action-hook definitions, their Redis side and replay jobs.
Imports only tracker.streams, tracker.config and tracker.contract.
"""
