"""Provider reports: delivery reports from ESPs and SMS gateways, `POST /reports/{channel}/{provider}`.

(`/hooks/{channel}/{provider}` is served too: the path senders were given first.)
One module per provider turns an authenticated request into `Report`s
(`base`); `routes.ProviderReportRoutes` ties them to message and profile through the
signed X-Tracker-Ref and records events through the edge's event buffer.
"""

from edge.reports.routes import ProviderReportRoutes

__all__ = ["ProviderReportRoutes"]
