"""Secret redaction for everything agents report: titles, detail text and nested JSON evidence.

Redaction runs once, at intake. Storage, publishing and the evidence digest all see only its output, so
it must be deterministic, and it must stay linear-time on hostile input (evidence can be ~1 MB). Every
pattern is compiled at import, and each is written so that a failed attempt costs at most the run of
characters it started on; the scanners that need more than one regex are loops that only move forward
(the one for prefixless tokens looks back at most a token's length from each match).

The token formats follow detect-secrets' detectors (and gitleaks' where those are newer), written here
rather than imported: detect-secrets scans files line by line and reports findings, while this must
replace spans in one pass over a string and stay linear.

It errs towards hiding: a false positive costs a little readability, a false negative leaks a credential
to every destination. It still leaves prose, digests, UUIDs and paths alone, because evidence that reads
"[REDACTED]" everywhere is useless to whoever handles the incident.
"""

from __future__ import annotations

import base64
import binascii
import re
import string
from collections.abc import Callable
from functools import lru_cache
from typing import Any
from urllib.parse import unquote

__all__ = [
    "MAX_DEPTH",
    "REDACTED",
    "REDACTED_PRIVATE_KEY",
    "TRUNCATED",
    "contains_secret",
    "is_sensitive_key",
    "redact_adjacent",
    "redact_json",
    "redact_text",
]

REDACTED = "[REDACTED]"
REDACTED_PRIVATE_KEY = "[REDACTED PRIVATE KEY]"
TRUNCATED = "[TRUNCATED: nested too deep]"
MAX_DEPTH = 32
"""Containers nested deeper than this are replaced by TRUNCATED (also stops cycles)."""

# --------------------------------------------------------------------------------------------------
# Sensitive field names
# --------------------------------------------------------------------------------------------------

# Names after normalisation (see _normalise_key). Exact matches only: "token" is a secret, "tokens" and
# "token_count" are metrics.
_SENSITIVE_NAMES = frozenset(
    {
        "password",
        "passwd",
        "pwd",
        "passphrase",
        "password_confirmation",
        "secret",
        "client_secret",
        "webhook_secret",
        "signing_secret",
        "secret_key",
        "secret_access_key",
        "token",
        "access_token",
        "refresh_token",
        "id_token",
        "auth_token",
        "session_token",
        "api_token",
        "api_key",
        "apikey",
        "x_api_key",
        "access_key",
        "private_key",
        "signing_key",
        "encryption_key",
        "master_key",
        "authorization",
        "proxy_authorization",
        "cookie",
        "cookies",
        "set_cookie",
        "credential",
        "credentials",
        "dsn",
        "connection_string",
        "conn_str",
        # Azure connection strings ("...;AccountKey=<base64>;..."); Service Bus / Event Hubs; SAS tokens.
        "account_key",
        "shared_access_key",
        "shared_access_signature",
        # URL signatures grant access on their own (Azure SAS, S3/GCS presigned URLs).
        "sig",
        "x_amz_signature",
        "x_goog_signature",
        # Spellings without a separator, which camelCase splitting cannot recover.
        "accesstoken",
        "refreshtoken",
        "authtoken",
        "apitoken",
        "clientsecret",
        "privatekey",
        "secretkey",
        "sessiontoken",
        "accountkey",
    }
)
# Suffixes that make any name sensitive (GITHUB_TOKEN, db_password, stripe_api_key). A bare "_key" suffix
# is deliberately absent: sort_key, primary_key and idempotency_key are identifiers, not secrets.
_SENSITIVE_SUFFIXES = (
    "_token",
    "_secret",
    "_password",
    "_passwd",
    "_pass",
    "_pwd",
    "_passphrase",
    "_api_key",
    "_apikey",
    "_secret_key",
    "_secret_access_key",
    "_private_key",
    "_signing_key",
    "_encryption_key",
    "_credentials",
    "_account_key",  # AZURE_STORAGE_ACCOUNT_KEY
)

_CAMEL_BOUNDARY = re.compile(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])")
_NAME_SEPARATORS = re.compile(r"[\s.\-_]+")
# Names longer than this are not cached (nor likely to be field names); keeps the cache's memory bounded.
_MAX_CACHED_NAME = 128


def _classify_key(key: str) -> bool:
    # "X-Api-Key", "apiKey", "API Key" and "api.key" all normalise to "api_key".
    name = _NAME_SEPARATORS.sub("_", _CAMEL_BOUNDARY.sub("_", key)).strip("_").lower()
    return name in _SENSITIVE_NAMES or name.endswith(_SENSITIVE_SUFFIXES)


_classify_key_cached = lru_cache(maxsize=4096)(_classify_key)


def is_sensitive_key(key: str) -> bool:
    """Whether a field with this name holds a secret (case, camelCase, '-', '.', ' ' and '_' insensitive)."""
    if len(key) > _MAX_CACHED_NAME:
        return _classify_key(key)
    return _classify_key_cached(key)


# --------------------------------------------------------------------------------------------------
# Text patterns
# --------------------------------------------------------------------------------------------------

# PEM private keys. BEGIN and END are searched separately (see _redact_private_keys) because one regex
# spanning the body would rescan the rest of the input for every BEGIN that has no END.
_PEM_BEGIN = re.compile(r"-----BEGIN[ A-Z0-9]{0,40}PRIVATE KEY(?: BLOCK)?-----")
_PEM_END = re.compile(r"-----END[ A-Z0-9]{0,40}PRIVATE KEY(?: BLOCK)?-----")
# Body of a key whose END was cut off (truncated logs): encryption headers, then base64 lines. Newlines
# may be real or escaped (a key inside a JSON string).
_PEM_TRUNCATED_BODY = re.compile(
    r"(?:(?:\s|\\[nr])*(?:Proc-Type|DEK-Info):[^\r\n\\]*)*(?:(?:\s|\\[nr])*[A-Za-z0-9+/=]{16,})*"
)

# scheme://user:password@host. The scheme is bounded and may not start inside a word, so each attempt
# is O(1) until "://"; user and password cannot cross '/', so an attempt ends at the next "://".
_URL_CREDENTIALS = re.compile(
    r"(?<![\w+.-])(?P<head>[A-Za-z][A-Za-z0-9+.-]{0,30}://[^\s/?#@:\"'<>\\]*:)"
    r"(?P<secret>[^\s/?#\"'<>\\]+)(?=@)"
)
# Webhook URLs whose path is the credential, each with a literal every match contains.
_WEBHOOK_URLS = (
    (
        re.compile(r"(?P<head>https://hooks\.slack\.com/(?:services|workflows|triggers)/)(?P<secret>[\w/-]+)"),
        "https://hooks.slack.com/",
    ),
    (
        re.compile(r"(?P<head>https://(?:ptb\.|canary\.)?discord(?:app)?\.com/api/webhooks/)(?P<secret>[\w/-]+)"),
        "/api/webhooks/",
    ),
)

# Cookie headers carry several secrets separated by ';', so the whole rest of the line goes.
_COOKIE_HEADER = re.compile(
    r"(?<![\w-])(?P<head>(?:set-)?cookie[ \t]*:[ \t]*)(?P<secret>[^\s\"'\\][^\r\n\"'\\]*)", re.IGNORECASE
)


def _token(prefix: str, rest: str) -> re.Pattern[str]:
    # The literal prefix leads so the engine can jump straight between its occurrences (a leading \b
    # makes it try every position: ~50x slower on 1 MB); the lookbehind then checks that the prefix
    # started a word. ``prefix`` must be fixed-width for that lookbehind.
    return re.compile(rf"{prefix}(?<!\w{prefix}){rest}")


def _looks_random(value: str) -> bool:
    # Generated credentials of 20+ characters virtually always mix digits or letter cases; words don't.
    return any(c.isdigit() for c in value) or (any(c.isupper() for c in value) and any(c.islower() for c in value))


def _looks_like_credential(value: str) -> bool:
    return _looks_random(value) or any(c in _CREDENTIAL_PUNCTUATION for c in value)


def _keep_head(match: re.Match[str]) -> str:
    return match["head"] + REDACTED


def _replace_token(match: re.Match[str]) -> str:
    return REDACTED


def _replace_random_token(match: re.Match[str]) -> str:
    return REDACTED if _looks_random(match.group()) else match.group()


def _replace_discord_token(match: re.Match[str]) -> str:
    user_id = match.group().split(".", 1)[0]
    try:
        decoded = base64.urlsafe_b64decode(user_id + "=" * (-len(user_id) % 4))
    except ValueError:
        return match.group()
    return REDACTED if decoded.isdigit() else match.group()


# Well-known credential formats, replaced wherever they appear. The second member decides, given the match,
# what replaces it: _replace_random_token keeps values that do not look random, for prefixes ordinary
# enough to start a word ("sk-learn-..."); others check the format's own structure. The third lists
# literals one of which every match contains (the pattern's prefix spelled out, or a part of it): where
# none occurs, the pattern is not tried (see _redact_exact_passes). The fourth, when given, is a regex every
# match contains a match of, for the prefilter (_CANDIDATES) where the literals are too common to help.
_TOKEN_PATTERNS: tuple[tuple[re.Pattern[str], Callable[[re.Match[str]], str], tuple[str, ...], str | None], ...] = (
    (_token("gh[pousr]_", "[A-Za-z0-9]{30,}"), _replace_token, ("ghp_", "gho_", "ghu_", "ghs_", "ghr_"), None),
    (_token("github_pat_", "[A-Za-z0-9_]{30,}"), _replace_token, ("github_pat_",), None),  # GitHub fine-grained
    (_token("glpat-", "[A-Za-z0-9_-]{20,}"), _replace_token, ("glpat-",), None),  # GitLab
    (_token("xox[a-z]", r"(?:\.xox[a-z])?-[A-Za-z0-9-]{10,}"), _replace_token, ("xox",), None),  # Slack
    (_token("xapp-", r"\d-[A-Za-z0-9-]{10,}"), _replace_token, ("xapp-",), None),  # Slack app-level
    # AWS access key id (long-term / session)
    (_token("A[KS]IA", r"[0-9A-Z]{16}\b"), _replace_token, ("AKIA", "ASIA"), None),
    # OpenAI, Anthropic (sk-ant-...)
    (_token("sk-", "[A-Za-z0-9_-]{20,}"), _replace_random_token, ("sk-",), None),
    # Stripe secret/restricted
    (_token("[rs]k_(?:live|test)_", "[A-Za-z0-9]{10,}"), _replace_random_token, ("k_live_", "k_test_"), None),
    # Standard Webhooks / Stripe signing
    (_token("whsec_", "[A-Za-z0-9+/=]{16,}"), _replace_random_token, ("whsec_",), None),
    # Google API key
    (_token("AIza", "[0-9A-Za-z_-]{35}(?![0-9A-Za-z_-])"), _replace_token, ("AIza",), None),
    (_token("lin_api_", "[A-Za-z0-9]{32,}"), _replace_token, ("lin_api_",), None),  # Linear API key
    (_token("lin_oauth_", "[A-Za-z0-9]{32,}"), _replace_token, ("lin_oauth_",), None),  # Linear OAuth token
    (_token("npm_", "[A-Za-z0-9]{36}(?![A-Za-z0-9])"), _replace_token, ("npm_",), None),  # npm
    (_token("hf_", "[A-Za-z0-9]{30,}"), _replace_random_token, ("hf_",), None),  # Hugging Face
    (_token(r"SG\.", r"[\w-]{16,}\.[\w-]{16,}"), _replace_token, ("SG.",), None),  # SendGrid
    # JWT: header, ".eyJ", payload.
    (_token("eyJ", r"[A-Za-z0-9_-]{5,}\.eyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]*"), _replace_token, (".eyJ",), None),
    # PyPI upload tokens are macaroons whose base64 opens with the issuer: pypi.org or test.pypi.org.
    (_token("pypi-", "AgE[A-Za-z0-9_-]{50,}"), _replace_token, ("pypi-AgE",), None),
    # Twilio account SID and API key SID: the two halves of a Twilio credential besides the secret.
    (
        _token("(?:AC|SK)", "[0-9a-fA-F]{32}(?![0-9A-Za-z])"),
        _replace_token,
        ("AC", "SK"),
        "AC[0-9a-fA-F]{32}|SK[0-9a-fA-F]{32}",
    ),
    # Square access tokens (legacy sq0atp-, current EAAA...) and OAuth application secrets, with the
    # sandbox variants. EAAA also opens ordinary base64, so the run must end where a Square token ends.
    (_token("sq0(?:atp|csp|atb|csb)-", "[A-Za-z0-9_-]{22,}"), _replace_token, ("sq0",), None),
    (_token("EAAA", "[A-Za-z0-9_-]{40,80}+(?![A-Za-z0-9_+/=-])"), _replace_random_token, ("EAAA",), None),
    (_token("AKC", "[A-Za-z0-9]{10,}"), _replace_random_token, ("AKC",), None),  # Artifactory API key (AKCp...)
    # Discord bot token: base64(user id).timestamp.HMAC; the id check keeps dotted names like
    # "NetworkConnectionManager.handle.processIncomingRequests" readable. No literal: always tried.
    (
        _token("[MNO]", r"[A-Za-z0-9_-]{23,25}\.[A-Za-z0-9_-]{6}\.[A-Za-z0-9_-]{27,38}(?![A-Za-z0-9_-])"),
        _replace_discord_token,
        (),
        r"M[A-Za-z0-9_-]{23,25}\.|N[A-Za-z0-9_-]{23,25}\.|O[A-Za-z0-9_-]{23,25}\.",
    ),
)
# Mailchimp API keys (32 hex, then "-us" and the datacenter) and Telegram bot tokens (the bot's id, ':',
# 35 characters) have no literal prefix. Each regex leads with the literal inside the token, so the engine
# jumps between its occurrences (a leading hex or digit class costs ~50x more), and a lookbehind checks
# the part before it; _redact_led_tokens then extends the match back over that part.
_MAILCHIMP_KEY = re.compile(r"-us(?<=[0-9a-f]{32}-us)\d{1,2}(?![0-9A-Za-z])")
_TELEGRAM_BOT_TOKEN = re.compile(r":(?<=\d{8}:)[A-Za-z0-9_-]{35}(?![A-Za-z0-9_-])")
_LOWER_HEX = frozenset("0123456789abcdef")
_DIGITS = frozenset("0123456789")
_ALPHANUMERIC = frozenset(string.ascii_letters + string.digits)
# Artifactory encrypted passwords (AP, a hex digit, then more) are common word shapes ("APAC2024Region"),
# so, as detect-secrets does, they count only in text that names Artifactory.
_ARTIFACTORY_CONTEXT = re.compile("artifactory|jfrog", re.IGNORECASE)
_ARTIFACTORY_PASSWORD = _token("AP", "[0-9A-F][A-Za-z0-9]{8,}")

# <password>...</password> in XML config or SOAP dumps; the tag is checked with is_sensitive_key.
_XML_ELEMENT = re.compile(r"<(?P<tag>[A-Za-z_][\w.-]*)>(?P<secret>[^<]+)</(?P=tag)>")

# A field name followed by its separator: key=value, key: value, "key": value, \"key\": value (JSON
# escaped inside a string), and --flag value. The lookbehind stops attempts starting inside a name, so
# each name is scanned once; the name is possessive because what follows it never starts with a name's
# character, so giving characters back could not make a match (it only cost a retry per character).
_FIELD = re.compile(
    r"""
    (?<![\w.-])
    (?P<key>(?P<flag>--?)?[A-Za-z_][\w.-]*+)
    (?:
        (?:\\?["'])?[ \t]*[:=][ \t]*
      | (?P<gap>(?(flag)[ \t]+|(?!)))
    )
    """,
    re.VERBOSE,
)
# Auth schemes stay readable: "Authorization: Bearer [REDACTED]".
_AUTH_SCHEMES = r"(?:bearer|basic|token|bot|apikey|api-key|sso-key|negotiate|ntlm)"
# The value after a sensitive field's separator. Exactly one content group matches; its span is what
# gets replaced, so quotes and the auth scheme survive.
_FIELD_VALUE = re.compile(
    rf"""
    (?:{_AUTH_SCHEMES}[ \t]+)?
    (?:
        (?P<done>\[REDACTED[^\]\r\n]{{0,40}}\])
      | \\"(?P<edq>[^"\\\r\n]*)
      | "(?P<dq>(?:[^"\\\r\n]|\\.)*)
      | '(?P<sq>(?:[^'\\\r\n]|\\.)*)
      | (?P<bare>[^\s"'`,;&<>(){{}}\[\]\\=][^\s"'`,;&<>(){{}}\\]*)
    )
    """,
    re.VERBOSE | re.IGNORECASE,
)
_CONTENT_GROUPS = ("edq", "dq", "sq", "bare")
# Unquoted literals that say a secret is absent, kept as redact_json keeps None and booleans.
_ABSENT_VALUES = frozenset({"null", "none", "nil", "undefined", "true", "false"})
_SCHEME_PREFIX = re.compile(rf"{_AUTH_SCHEMES}[ \t]+(?=\S)", re.IGNORECASE)

# "Bearer <credential>" outside any header. Prose ("Bearer of bad news") is told apart by
# _looks_like_credential, not by the regex.
_BARE_BEARER = re.compile(r"(?<![\w-])(?P<head>bearer[ \t]+)(?P<secret>[A-Za-z0-9._~+/=-]{8,})", re.IGNORECASE)
_CREDENTIAL_PUNCTUATION = frozenset("._~+/=")


def _replace_bare_bearer(match: re.Match[str]) -> str:
    return match["head"] + REDACTED if _looks_like_credential(match["secret"]) else match.group()


def _replace_xml_element(match: re.Match[str]) -> str:
    if not is_sensitive_key(match["tag"]):
        return match.group()
    return f"<{match['tag']}>{REDACTED}</{match['tag']}>"


def _mask_field_value(content: str) -> str:
    scheme = _SCHEME_PREFIX.match(content)
    return content[: scheme.end()] + REDACTED if scheme else REDACTED


def _redact_private_keys(text: str) -> str:
    if "PRIVATE KEY" not in text:
        return text
    parts: list[str] = []
    copied = 0
    end_missing = False
    while (begin := _PEM_BEGIN.search(text, copied)) is not None:
        end = None if end_missing else _PEM_END.search(text, begin.end())
        if end is not None:
            stop = end.end()
        else:
            # No END after this BEGIN means none after any later BEGIN either: never search again.
            end_missing = True
            body = _PEM_TRUNCATED_BODY.match(text, begin.end())
            stop = body.end() if body else begin.end()
        parts += [text[copied : begin.start()], REDACTED_PRIVATE_KEY]
        copied = stop
    parts.append(text[copied:])
    return "".join(parts)


def _always(token: str) -> bool:
    return True


def _telegram_secret_looks_random(token: str) -> bool:
    # The bot id is all digits; only the part after ':' tells a token from a log line
    # ("1732612345:connection-reset-by-peer-while-read").
    return _looks_random(token.split(":", 1)[1])


def _redact_led_tokens(
    text: str,
    pattern: re.Pattern[str],
    head: frozenset[str],
    head_length: tuple[int, int],
    not_after: frozenset[str],
    is_secret: Callable[[str], bool],
) -> str:
    # Each match of ``pattern`` is the tail of a token; its head is the run of ``head`` characters just
    # before it, which must be head_length long and not follow a character in ``not_after``.
    shortest, longest = head_length
    parts: list[str] = []
    copied = 0
    for match in pattern.finditer(text):
        begin = match.start()
        while begin > copied and match.start() - begin <= longest and text[begin - 1] in head:
            begin -= 1
        if not shortest <= match.start() - begin <= longest or (begin > 0 and text[begin - 1] in not_after):
            continue
        if not is_secret(text[begin : match.end()]):
            continue
        parts += [text[copied:begin], REDACTED]
        copied = match.end()
    parts.append(text[copied:])
    return "".join(parts)


def _redact_fields(text: str) -> str:
    parts: list[str] = []
    copied = 0
    pos = 0
    while (field := _FIELD.search(text, pos)) is not None:
        # Only the name and separator are consumed, so a value that is not secret is still scanned
        # ('"msg": "password: hunter2"').
        pos = field.end()
        if not is_sensitive_key(field["key"]):
            continue
        value = _FIELD_VALUE.match(text, pos)
        if value is None or value["done"] is not None:
            continue
        if field["gap"] is not None and text.startswith("-", pos):
            continue  # "--password --verbose": the next token is another flag, not the value
        group = next(name for name in _CONTENT_GROUPS if value[name] is not None)
        start, end = value.span(group)
        pos = value.end()
        if start == end or (group == "bare" and value[group].lower() in _ABSENT_VALUES):
            continue  # nothing to hide, and "password: null" may be the very symptom being reported
        parts += [text[copied:start], _mask_field_value(value[group])]
        copied = end
    parts.append(text[copied:])
    return "".join(parts)


# --------------------------------------------------------------------------------------------------
# Encoded secrets
# --------------------------------------------------------------------------------------------------

# A secret base64-, hex- or URL-encoded is as good as in clear to whoever reads it. Runs of an encoding's
# alphabet of plausible length are decoded; a run whose decoded text holds a secret (by the detectors
# above) goes whole. Decoding nests at most _MAX_DECODE_DEPTH levels (base64 of URL-encoded text, …).
# Limits: runs longer than _MAX_ENCODED_RUN are not decoded, nor is binary that is not mostly text
# (gzip, protobuf), nor encodings other than these three.
_MIN_ENCODED_RUN = 16
_MAX_ENCODED_RUN = 16_384
_MAX_DECODE_DEPTH = 2
_BASE64_RUN = re.compile(rf"(?<![A-Za-z0-9+/_-])[A-Za-z0-9+/_-]{{{_MIN_ENCODED_RUN},}}={{0,2}}")
_HEX_DIGITS = frozenset(string.hexdigits)
# Percent-encoded: a run of non-blank characters holding at least one %XX. '%' is outside the other class,
# so each character is tried once.
_PERCENT_RUN = re.compile(r"(?:[^\s%]*%[0-9A-Fa-f]{2})+[^\s%]*")


def _as_text(raw: bytes) -> str | None:
    """Decoded bytes as text when they are text (so random bytes are not scanned as if they were)."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return None
    printable = sum(1 for c in text if c.isprintable() or c in "\r\n\t")
    return text if printable >= 0.9 * len(text) else None


def _decodings(run: str) -> list[str]:
    body = run.rstrip("=")
    texts: list[str] = []
    if len(body) % 2 == 0 and all(c in _HEX_DIGITS for c in body):
        texts.append(bytes.fromhex(body).decode("latin-1"))
    if len(body) % 4 != 1:
        padded = body + "=" * (-len(body) % 4)
        alphabet = b"-_" if ("-" in body or "_" in body) else None
        try:
            raw = base64.b64decode(padded, altchars=alphabet, validate=True)
        except (binascii.Error, ValueError):
            raw = None
        text = _as_text(raw) if raw else None
        if text:
            texts.append(text)
    return texts


@lru_cache(maxsize=4096)
def _decodes_to_secret(run: str, depth: int) -> bool:
    # Cached: logs repeat the same blobs (a header, a cookie) many times.
    return any(_redact(decoded, depth + 1) != decoded for decoded in _decodings(run))


def _redact_encoded(text: str, depth: int) -> str:
    if depth >= _MAX_DECODE_DEPTH:
        return text

    def base64_or_hex(match: re.Match[str]) -> str:
        run = match.group()
        return REDACTED if len(run) <= _MAX_ENCODED_RUN and _decodes_to_secret(run, depth) else run

    def percent(match: re.Match[str]) -> str:
        run = match.group()
        if len(run) > _MAX_ENCODED_RUN:
            return run
        decoded = unquote(run)
        clean = _redact(decoded, depth + 1)
        return run if clean == decoded else clean

    if "%" in text:
        text = _PERCENT_RUN.sub(percent, text)
    if len(text) < _MIN_ENCODED_RUN:
        return text  # shorter than any run _BASE64_RUN matches
    return _BASE64_RUN.sub(base64_or_hex, text)


# --------------------------------------------------------------------------------------------------
# Prefilter
# --------------------------------------------------------------------------------------------------

# Most of what agents report holds no secret, and each pass costs a regex scan even where it matches
# nothing. So the passes before the field scanner (_redact_exact_passes) run only when one of them could
# change the text: when it holds a match of _CANDIDATES, or "cook" lowercased (the cookie header). Each
# alternative is implied by a pass's pattern (every match of the pattern holds a match of it), so where
# none matches, the first pass leaves the text as it is, the second sees the same text, and so on:
# skipping them changes nothing. The alternatives open with a literal, so the scan is one cheap pass.
_CANDIDATES = re.compile(
    "|".join(
        [
            "PRIVATE KEY",
            r"""://[^\s/?#@:"'<>\\]*:[^\s/?#"'<>\\]+@""",  # _URL_CREDENTIALS without its scheme
            *(re.escape(anchor) for _, anchor in _WEBHOOK_URLS),
            *(
                candidate or "|".join(re.escape(anchor) for anchor in anchors)
                for _, _, anchors, candidate in _TOKEN_PATTERNS
            ),
            _MAILCHIMP_KEY.pattern,
            _TELEGRAM_BOT_TOKEN.pattern,
            _ARTIFACTORY_PASSWORD.pattern,
            "</",  # _XML_ELEMENT
        ]
    )
)
# A sensitive field name (is_sensitive_key) lowercased holds one of these: each sensitive name and
# suffix holds one without an underscore, so it comes from letters that are adjacent in the name.
_FIELD_NAME_PARTS = re.compile("pass|pwd|secret|token|key|auth|cook|cred|dsn|str|sig")
# The cookie header's and bare bearer's guards, "cook" and "bear", are read in the lowercased text: they
# avoid the letters whose case-insensitive matches do not lowercase to them (dotless i, long s), so a
# match of either pattern, lowercased, holds them.
_prefilter = True
"""False runs every pass on every text: the reference the prefilter is tested against."""


def redact_text(text: str) -> str:
    """``text`` with every recognised secret replaced by REDACTED, keeping the surrounding text readable.

    Secrets are recognised in clear and base64-, hex- or URL-encoded (see _redact_encoded).
    Deterministic and idempotent: ``redact_text(redact_text(t)) == redact_text(t)``.
    """
    return _redact(text, 0)


def _redact(text: str, depth: int) -> str:
    if not text:
        return text
    if not _prefilter:
        text = _redact_folded_passes(_redact_exact_passes(text, guarded=False), guarded=False)
    else:
        folded = text.lower()
        if _CANDIDATES.search(text) is not None or "cook" in folded:
            text = _redact_folded_passes(_redact_exact_passes(text, guarded=True), guarded=True)
        elif "bear" in folded or _FIELD_NAME_PARTS.search(folded) is not None:
            # No pass before the field scanner can change the text (see _CANDIDATES).
            text = _redact_folded_passes(text, guarded=True)
    return _redact_encoded(text, depth)


# Guarded, a pass runs only where its input holds a literal that every match of its pattern holds (a pass
# that cannot match leaves its input as it is); unguarded, every pass runs (the tests' reference).


def _redact_exact_passes(text: str, guarded: bool) -> str:
    """The passes in clear before the field scanner: all but the cookie header's are case-sensitive."""
    # Private keys first: their base64 body must go as one block, not be nibbled by the token patterns.
    text = _redact_private_keys(text)
    if not guarded or ("://" in text and "@" in text):
        text = _URL_CREDENTIALS.sub(_keep_head, text)
    for pattern, anchor in _WEBHOOK_URLS:
        if not guarded or anchor in text:
            text = pattern.sub(_keep_head, text)
    if not guarded or "cook" in text.lower():
        text = _COOKIE_HEADER.sub(_keep_head, text)
    for pattern, replace, anchors, _ in _TOKEN_PATTERNS:
        if guarded and anchors:
            for anchor in anchors:
                if anchor in text:
                    break
            else:
                continue
        text = pattern.sub(replace, text)
    if not guarded or "-us" in text:
        text = _redact_led_tokens(text, _MAILCHIMP_KEY, _LOWER_HEX, (32, 32), _ALPHANUMERIC, _always)
    if not guarded or ":" in text:
        text = _redact_led_tokens(text, _TELEGRAM_BOT_TOKEN, _DIGITS, (8, 10), _DIGITS, _telegram_secret_looks_random)
    if (not guarded or "AP" in text) and _ARTIFACTORY_CONTEXT.search(text):
        text = _ARTIFACTORY_PASSWORD.sub(_replace_random_token, text)
    if not guarded or "</" in text:
        text = _XML_ELEMENT.sub(_replace_xml_element, text)
    return text


def _redact_folded_passes(text: str, guarded: bool) -> str:
    """The last passes in clear, both case-insensitive: sensitive fields, then bare bearer tokens."""
    if not guarded or _FIELD_NAME_PARTS.search(text.lower()) is not None:
        text = _redact_fields(text)
    # Last, so "Authorization: Bearer x" is handled (scheme kept) by the field scanner.
    if not guarded or "bear" in text.lower():
        text = _BARE_BEARER.sub(_replace_bare_bearer, text)
    return text


# A secret split across two fields ("ghp_abc" in one, "def…" in the next) is recognised only where the
# fields meet: the run of non-blank characters ending one and the run starting the next are checked
# joined (as sent, since the first half alone may already be redacted), and so are the ends of the
# redacted fields (for secrets with a blank inside, "password:" | " hunter2"). When the seam holds a
# secret, the run at the end of the first field and the run at the start of the second both go.
# Limit: only adjacent fields, joined directly; a secret split three ways, across non-adjacent fields or
# around other text is not recognised. Cost: a field ending in a secret hides the first word of the next
# when it starts without a blank (the seam cannot tell a split from a neighbour).
_SEAM_CHARS = 300
_LEADING_RUN = re.compile(r"\s*\S*")
_TRAILING_RUN = re.compile(r"\S*\s*\Z")
_FIRST_RUN = re.compile(r"\S*")
_LAST_RUN = re.compile(r"\S*\Z")


def _seam_holds_secret(left: str, right: str, left_sent: str, right_sent: str) -> bool:
    last, first = _LAST_RUN.search(left_sent[-_SEAM_CHARS:]), _FIRST_RUN.match(right_sent[:_SEAM_CHARS])
    ending, starting = (last.group(), first.group()) if last is not None and first is not None else ("", "")
    # A run that holds a secret alone was redacted on its own: only a fragment can continue one.
    if ending and starting and not contains_secret(starting) and contains_secret(ending + starting):
        return True
    tail, head = left[-_SEAM_CHARS:], right[:_SEAM_CHARS]
    return bool(tail and head) and contains_secret(tail + head)


def redact_adjacent(values: list[str], sent: list[str] | None = None) -> list[str]:
    """``values`` (already redacted one by one) with secrets split across neighbours redacted too.

    ``sent`` are the values as received, in the same order (default: ``values``).
    """
    sent = values if sent is None else sent
    out = list(values)
    for i in range(len(out) - 1):
        if not _seam_holds_secret(out[i], out[i + 1], sent[i], sent[i + 1]):
            continue
        tail = _TRAILING_RUN.search(out[i])
        head = _LEADING_RUN.match(out[i + 1])
        if tail is not None and tail.group().strip():
            out[i] = out[i][: tail.start()] + REDACTED
        if head is not None and head.group().strip():
            out[i + 1] = REDACTED + out[i + 1][head.end() :]
    return out


def contains_secret(text: str) -> bool:
    """Whether redact_text would change ``text``."""
    return redact_text(text) != text


# --------------------------------------------------------------------------------------------------
# JSON
# --------------------------------------------------------------------------------------------------

_PAIR_NAME_FIELDS = frozenset({"name", "key"})


def _names_secret_pair(mapping: dict[Any, Any]) -> bool:
    # {"name": "DB_PASSWORD", "value": "..."} (Kubernetes env, HAR headers, AWS tags): the secret's name
    # is in a sibling field, so the "value" field must be treated as sensitive.
    return any(
        isinstance(key, str) and key.lower() in _PAIR_NAME_FIELDS and isinstance(item, str) and is_sensitive_key(item)
        for key, item in mapping.items()
    )


def _mask_whole(value: Any) -> Any:
    # None and booleans cannot carry a secret, and "[REDACTED]" in their place would wrongly suggest a
    # secret was set ({"password": null} is often the very symptom being reported).
    return value if value is None or isinstance(value, bool) else REDACTED


def _unique_key(key: Any, taken: dict[Any, Any]) -> Any:
    # Two keys that redact to the same text must not silently overwrite each other.
    if key not in taken:
        return key
    n = 2
    while f"{key} #{n}" in taken:
        n += 1
    return f"{key} #{n}"


def _redact_mapping(mapping: dict[Any, Any], depth: int) -> dict[Any, Any]:
    value_is_secret = _names_secret_pair(mapping)
    result: dict[Any, Any] = {}
    for key, item in mapping.items():
        if not isinstance(key, str):
            result[_unique_key(key, result)] = _redact_value(item, depth + 1)
            continue
        if is_sensitive_key(key) or (value_is_secret and key.lower() == "value"):
            new_item = _mask_whole(item)
        else:
            new_item = _redact_value(item, depth + 1)
        result[_unique_key(redact_text(key), result)] = new_item
    return result


def _redact_value(value: Any, depth: int) -> Any:
    if isinstance(value, str):
        return redact_text(value)
    if value is None or isinstance(value, bool | int | float):
        return value
    if isinstance(value, dict | list | tuple):
        if depth >= MAX_DEPTH:
            return TRUNCATED
        if isinstance(value, dict):
            return _redact_mapping(value, depth)
        return [_redact_value(item, depth + 1) for item in value]
    # Never echo the value: it may be the secret.
    raise TypeError(f"redact_json accepts JSON-like data only, got {type(value).__name__}")


def redact_json(value: Any) -> Any:
    """A redacted deep copy of JSON-like data (dict, list, tuple, str, int, float, bool, None).

    Values under sensitive keys become REDACTED whatever their type (None and booleans are kept: they
    cannot hold a secret). Every other string, including dict keys, goes through redact_text. Containers
    nested more than MAX_DEPTH levels deep become TRUNCATED. Tuples come back as lists. Raises TypeError
    for any other type.
    """
    return _redact_value(value, 0)
