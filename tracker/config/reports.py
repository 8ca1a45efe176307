"""Provider reports: what ESPs and carriers POST to `/reports/{channel}/{provider}`, and how each is checked.

Secrets are read as plain strings and checked when the edge builds its providers
(edge.reports), so that a malformed one never gets echoed in an error. Each variable
was first named `TRACKER_HOOK_*`; those names are still read when the new one is unset.
"""

from __future__ import annotations

from dataclasses import dataclass

from tracker.config._fields import SettingsPart, float_range, int_range, setting


@dataclass(frozen=True, slots=True, repr=False)
class ReportSettings(SettingsPart):
    """Provider reports (`TRACKER_REPORT_*`): limits and each provider's credentials; empty credentials: off."""

    max_body_bytes: int = setting(
        "TRACKER_REPORT_MAX_BODY_BYTES",
        2**20,
        int_range(1024, 64 * 2**20),
        "largest provider report body (413 above)",
        aliases=("TRACKER_HOOK_MAX_BODY_BYTES",),
    )
    upload_budget_bytes: int = setting(
        "TRACKER_REPORT_UPLOAD_BUDGET_BYTES",
        32 * 2**20,
        int_range(1024, 4 * 2**30),
        "bytes of provider report bodies one edge process reads at once (503 with Retry-After above);"
        " at least TRACKER_REPORT_MAX_BODY_BYTES",
    )
    body_timeout_s: float = setting(
        "TRACKER_REPORT_BODY_TIMEOUT_S",
        10.0,
        float_range(0.05, 600.0),
        "seconds a provider report body may take to arrive, whole (408 after)",
    )
    max_skew_s: int = setting(
        "TRACKER_REPORT_MAX_SKEW_S",
        300,
        int_range(1, 7 * 86400),
        "signed provider report timestamps further off than this get 401",
        aliases=("TRACKER_HOOK_MAX_SKEW_S",),
    )
    generic_email_secret: str = setting(
        "TRACKER_REPORT_GENERIC_EMAIL_SECRET",
        "",
        str,
        "HMAC secret of /reports/email/generic (empty: disabled)",
        aliases=("TRACKER_HOOK_GENERIC_EMAIL_SECRET",),
    )
    generic_sms_secret: str = setting(
        "TRACKER_REPORT_GENERIC_SMS_SECRET",
        "",
        str,
        "HMAC secret of /reports/sms/generic (empty: disabled)",
        aliases=("TRACKER_HOOK_GENERIC_SMS_SECRET",),
    )
    ses_topic_arns: str = setting(
        "TRACKER_REPORT_SES_TOPIC_ARNS",
        "",
        str,
        "comma-separated SNS topic ARNs of SES notifications (empty: disabled)",
        aliases=("TRACKER_HOOK_SES_TOPIC_ARNS",),
    )
    sns_cert_url_pattern: str = setting(
        "TRACKER_REPORT_SNS_CERT_URL_PATTERN",
        r"^https://sns\.[a-z0-9-]+\.amazonaws\.com(\.cn)?/[^?#@]+\.pem$",
        str,
        "regex an SNS SigningCertURL must match",
        aliases=("TRACKER_HOOK_SNS_CERT_URL_PATTERN",),
    )
    sns_subscribe_url_pattern: str = setting(
        "TRACKER_REPORT_SNS_SUBSCRIBE_URL_PATTERN",
        r"^https://sns\.[a-z0-9-]+\.amazonaws\.com(\.cn)?/\?",
        str,
        "regex an SNS SubscribeURL must match before the edge fetches it",
        aliases=("TRACKER_HOOK_SNS_SUBSCRIBE_URL_PATTERN",),
    )
    sendgrid_public_key: str = setting(
        "TRACKER_REPORT_SENDGRID_PUBLIC_KEY",
        "",
        str,
        "SendGrid signed event webhook verification key (empty: disabled)",
        aliases=("TRACKER_HOOK_SENDGRID_PUBLIC_KEY",),
    )
    mailgun_signing_key: str = setting(
        "TRACKER_REPORT_MAILGUN_SIGNING_KEY",
        "",
        str,
        "Mailgun HTTP webhook signing key (empty: disabled)",
        aliases=("TRACKER_HOOK_MAILGUN_SIGNING_KEY",),
    )
    postmark_basic_auth: str = setting(
        "TRACKER_REPORT_POSTMARK_BASIC_AUTH",
        "",
        str,
        "USER:PASSWORD Postmark sends as basic auth (empty: disabled)",
        aliases=("TRACKER_HOOK_POSTMARK_BASIC_AUTH",),
    )
    twilio_auth_token: str = setting(
        "TRACKER_REPORT_TWILIO_AUTH_TOKEN",
        "",
        str,
        "Twilio auth token that signs status callbacks (empty: disabled)",
        aliases=("TRACKER_HOOK_TWILIO_AUTH_TOKEN",),
    )
    smpp_basic_auth: str = setting(
        "TRACKER_REPORT_SMPP_BASIC_AUTH",
        "",
        str,
        "USER:PASSWORD of SMPP delivery receipts (empty: disabled)",
        aliases=("TRACKER_HOOK_SMPP_BASIC_AUTH",),
    )
    sparkpost_basic_auth: str = setting(
        "TRACKER_REPORT_SPARKPOST_BASIC_AUTH",
        "",
        str,
        "USER:PASSWORD SparkPost webhooks send as basic auth (empty, with no token either: disabled)",
    )
    sparkpost_webhook_token: str = setting(
        "TRACKER_REPORT_SPARKPOST_WEBHOOK_TOKEN",
        "",
        str,
        "token SparkPost sends in X-MessageSystems-Webhook-Token (empty, with no basic auth either: disabled)",
    )
    vonage_signature_secret: str = setting(
        "TRACKER_REPORT_VONAGE_SIGNATURE_SECRET",
        "",
        str,
        "Vonage signature secret that signs Messages API status webhooks (empty: disabled)",
    )
