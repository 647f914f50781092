"""PII redaction: e-mail addresses, IP addresses and phone numbers become placeholders.

Source: datatrove's `PIIFormatter` (huggingface/datatrove,
src/datatrove/pipeline/formatters/pii.py), which FineWeb applies (Penedo et al. 2024,
arXiv:2406.17557, section 3.6: e-mails and public IP addresses are anonymised). As there:

- IP addresses are validated with `ipaddress` and, by default, only public (`is_global`)
  ones are redacted: private, loopback, link-local and documentation ranges (192.168.x.x,
  10.x.x.x, 127.0.0.1, 2001:db8::/32, ...) identify nobody and appear in technical text.
  IPv6 candidates also need three non-empty groups: "a::b" is C++/Rust far more often.
- E-mail addresses are matched case-insensitively and need a dotted domain with an
  alphabetic TLD; image names such as "logo@2x.png" are not e-mails.

Beyond datatrove, phone numbers are redacted conservatively, accepting only two shapes:
- international: "+" country code, then digit groups separated by space, "." or "-"
  (optionally a parenthesised area code), 8 to 15 digits in all (E.164's maximum), or
  "+" and 10 to 15 digits with no separator;
- North American (NANP): "(AAA) EEE-NNNN", "AAA-EEE-NNNN", "AAA.EEE.NNNN", "AAA EEE NNNN",
  optionally prefixed by "1-" / "1 " / "+1", where area code and exchange start with 2-9.
Separators are required and digits must not touch other digits, letters or dots, so years,
dates, prices, times, version numbers, ISBNs and long bare numbers are left alone.
Placeholders are fixed strings ("<EMAIL>" ...), not fake values, so they cannot be mistaken
for real data downstream.
"""
from __future__ import annotations

import ipaddress
import re
from typing import Callable

from pydantic import Field

from dataproc.documents.contract import DocStage, StageResult, floats
from dataproc.options import StageOptions

EMAIL_RE = re.compile(
    r"(?<![\w.%+-])[a-z0-9](?:[a-z0-9._%+-]{0,62}[a-z0-9_%+-])?"
    r"@(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)+([a-z]{2,24})(?![\w-]|\.\w)",
    re.IGNORECASE,
)
# File extensions that look like TLDs in "name@2x.png"-style asset names.
_NOT_TLDS = frozenset({"png", "jpg", "jpeg", "gif", "svg", "webp", "bmp", "ico", "avif"})

_OCTET = r"(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)"
# Not part of a longer dotted number (version strings, OIDs) on either side.
IPV4_RE = re.compile(rf"(?<![\w.]){_OCTET}(?:\.{_OCTET}){{3}}(?![\w]|\.\d)")
# A loose candidate (hex groups and colons, optionally an IPv4 tail); `ipaddress` decides.
IPV6_RE = re.compile(
    r"(?<![\w:.])(?:[0-9a-f]{0,4}:){2,7}(?:\d{1,3}(?:\.\d{1,3}){3}|[0-9a-f]{1,4})?(?![\w:]|\.\d)",
    re.IGNORECASE,
)

# Separators between digit groups are mandatory (except around a parenthesised area code),
# which keeps the pattern unambiguous (no catastrophic backtracking) and skips bare numbers;
# the compact E.164 form "+4930123456" (10 to 15 digits) is the one exception.
PHONE_INTL_RE = re.compile(
    r"(?<![\w+.])\+(?:\d{10,15}|\d{1,3}(?:[ .\-]?\(\d{1,4}\)[ .\-]?\d{1,8})?(?:[ .\-]\d{1,8}){0,6})"
    r"(?![\w]|[.\-]\d)"
)
PHONE_NANP_RE = re.compile(
    r"(?<![\w+.\-])(?:1[ .\-])?(?:\([2-9]\d\d\)[ ]?|[2-9]\d\d([ .\-]))[2-9]\d\d([ .\-])\d{4}(?![\w]|[.\-]\d)"
)

# Necessary conditions for a match of each pattern above, as simple patterns that a search
# rejects several times faster than the full pattern's scan (its look-behinds and
# alternatives are tried at every position): most pages have none, and skip the full scan.
# Each is a substring every match of its pattern contains, so the output cannot change.
_EMAIL_GUARD = re.compile(r"[a-z0-9_%+-]@[a-z0-9]", re.IGNORECASE)
_IPV4_GUARD = re.compile(r"\d\.\d+\.\d+\.\d")
_IPV6_GUARD = re.compile(r":[0-9a-f]{0,4}:", re.IGNORECASE)
_PHONE_INTL_GUARD = re.compile(r"\+\d")
_PHONE_NANP_GUARD = re.compile(r"\d\d\d[ .\-]\d{4}")


class PiiOptions(StageOptions):
    emails: bool = True
    ip_addresses: bool = True
    phone_numbers: bool = True
    public_ips_only: bool = Field(True, description="keep private/loopback/reserved addresses, as datatrove")
    email_placeholder: str = "<EMAIL>"
    ip_placeholder: str = "<IP_ADDRESS>"
    phone_placeholder: str = "<PHONE_NUMBER>"


class PiiRedactor(DocStage):
    """Replace e-mails, IP addresses and phone numbers; scores count what was replaced. Never drops."""

    rewrites = True
    columns = floats("pii_emails", "pii_ips", "pii_phones")

    def __init__(self, options: PiiOptions | None = None):
        self.opts = options or PiiOptions()

    def process(self, text: str) -> StageResult:
        o = self.opts
        n_emails = n_ips = n_phones = 0
        # Cheap guards skip the regexes on the many documents that cannot match.
        if o.emails and "@" in text and _EMAIL_GUARD.search(text):
            text, n_emails = _sub(EMAIL_RE, text, o.email_placeholder, _is_email)
        if o.ip_addresses:
            valid = self._is_redactable_ip
            # IPv6 first, so the IPv4 tail of "::ffff:1.2.3.4" is redacted with its address.
            if ("::" in text or text.count(":") >= 7) and _IPV6_GUARD.search(text):
                text, n = _sub(IPV6_RE, text, o.ip_placeholder, valid)
                n_ips += n
            if "." in text and _IPV4_GUARD.search(text):
                text, n = _sub(IPV4_RE, text, o.ip_placeholder, valid)
                n_ips += n
        if o.phone_numbers:
            if "+" in text and _PHONE_INTL_GUARD.search(text):
                text, n = _sub(PHONE_INTL_RE, text, o.phone_placeholder, _is_intl_phone)
                n_phones += n
            if _PHONE_NANP_GUARD.search(text):
                text, n = _sub(PHONE_NANP_RE, text, o.phone_placeholder, _is_nanp_phone)
                n_phones += n
        scores = {"pii_emails": float(n_emails), "pii_ips": float(n_ips), "pii_phones": float(n_phones)}
        return StageResult(None, scores, text=text)

    def _is_redactable_ip(self, match: re.Match) -> bool:
        candidate = match.group(0)
        try:
            ip = ipaddress.ip_address(candidate)
        except ValueError:
            return False
        if ip.version == 6:
            if "." not in candidate and sum(1 for g in candidate.split(":") if g) < 3:
                # "a::b"-shaped tokens are far more often C++/Rust paths than addresses.
                return False
            ip = ip.ipv4_mapped or ip
        return ip.is_global or not self.opts.public_ips_only


def _sub(pattern: re.Pattern, text: str, placeholder: str, valid: Callable[[re.Match], bool]) -> tuple[str, int]:
    count = 0

    def replace(match: re.Match) -> str:
        nonlocal count
        if not valid(match):
            return match.group(0)
        count += 1
        return placeholder

    return pattern.sub(replace, text), count


def _is_email(match: re.Match) -> bool:
    return match.group(1).lower() not in _NOT_TLDS


def _digits(s: str) -> int:
    return sum(c.isdigit() for c in s)


def _is_intl_phone(match: re.Match) -> bool:
    return 8 <= _digits(match.group(0)) <= 15


def _is_nanp_phone(match: re.Match) -> bool:
    # "555-123 4567" mixes separators: more likely two numbers than one phone number.
    first, second = match.group(1), match.group(2)
    return first is None or first == second
