"""Delivery reports from ESPs and SMS gateways: `POST /hooks/{channel}/{provider}`.

One module per provider turns an authenticated request into `Report`s
(`reports`); `routes.ProviderReportRoutes` ties them to message and profile through the
signed X-Tracker-Ref and records events through the edge's event buffer.
"""

from edge.reports.routes import ProviderReportRoutes

__all__ = ["ProviderReportRoutes"]
