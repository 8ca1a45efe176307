"""Addresses as a recipient may see them on a page anyone holding the link can open.

Enough to recognise one's own address (`j***@example.com`, `+44 ****** **34`),
not enough to learn someone else's from a forwarded message.
"""

from __future__ import annotations


def mask_email(email: str) -> str:
    local, at, domain = email.rpartition("@")
    if not at or not local:
        return "***"
    return f"{local[0]}***@{domain}"


def mask_phone(phone: str) -> str:
    digits = [c for c in phone if c.isdigit()]
    if len(digits) < 7:
        return "*" * max(len(digits) - 2, 3) + "".join(digits[-2:])
    # The country code (up to its first two digits) and the last two digits stay; the rest is hidden.
    return f"+{''.join(digits[:2])} {'*' * (len(digits) - 6)} **{''.join(digits[-2:])}"


def masked_address(channel: str, email: str | None, phone: str | None) -> str:
    """The profile's address on the message's channel, masked; empty when that channel has none to show."""
    if channel == "email" and email:
        return mask_email(email)
    if channel == "sms" and phone:
        return mask_phone(phone)
    return ""
