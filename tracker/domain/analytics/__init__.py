"""Analytics: what the API and the report pages read from the flusher's rollups (migration 0008).

Not the provider reports of `edge/reports/` (what ESPs POST to us): these are reports for people
about messages and profiles. Every query here reads rollups or an index, never a scan of `events`.
"""
