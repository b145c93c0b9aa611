"""One realistic sample per secret family redaction knows, for the redaction tests.

Every value is assembled at runtime from parts, so secret scanners do not flag the repository. Each
``SecretSample`` pairs the raw secret (which must appear in no output) with a line that carries it the
way an agent would report it; a few families are only recognisable in such a line (an Artifactory
password needs the word "artifactory", an Azure key its ``AccountKey=``).
"""

from __future__ import annotations

import base64
from dataclasses import dataclass

MIXED = "A1b2C3d4E5"
HEX32 = "9b4cc552" + "783500ac" + "e5414a1e" + "d3e9fd1a"

# --- families redaction has long known -----------------------------------------------------------

GITHUB_PAT = "ghp_" + MIXED * 3 + "f6G7h8"
GITHUB_FINE_GRAINED = "github_pat_" + MIXED * 2 + "_" + MIXED * 5
SLACK_BOT = "xoxb-" + "1234567890-1234567890-" + MIXED * 2
SLACK_APP = "xapp-1-" + "A0123456789-" + MIXED * 2
AWS_KEY_ID = "AKIA" + "IOSFODNN7EXAMPLE"
AWS_SESSION_KEY_ID = "ASIA" + "IOSFODNN7EXAMPLE"
AWS_SECRET = "wJalrXUtnFEMI/K7MDENG/" + "bPxRfiCYEXAMPLEKEY"
OPENAI_KEY = "sk-proj-" + MIXED * 4
ANTHROPIC_KEY = "sk-ant-api03-" + MIXED * 4 + "-" + MIXED
STRIPE_LIVE = "sk_live_" + MIXED * 3
STRIPE_RESTRICTED = "rk_live_" + MIXED * 3
STRIPE_TEST = "sk_test_" + MIXED * 3
GOOGLE_KEY = "AIza" + "SyA-" + MIXED * 2 + "_b2C3d4E5f6"
LINEAR_KEY = "lin_api_" + MIXED * 4
WEBHOOK_SECRET = "whsec_" + "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
NPM_TOKEN = "npm_" + MIXED * 3 + "f6G7h8"
GITLAB_TOKEN = "glpat-" + MIXED * 2
HF_TOKEN = "hf_" + MIXED * 3 + "f6G7"
SENDGRID_KEY = "SG." + MIXED * 2 + "ab." + MIXED * 4 + "abc"
JWT = (
    "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9"
    + ".eyJzdWIiOiIxMjM0NTY3ODkwIiwibmFtZSI6IkpvaG4gRG9lIn0"
    + ".SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c"
)
PEM_BODY = "MIIEpAIBAAKCAQEA3Tz2mr7SZiAMfQyuvBjM9Oi\nZ1BjP5CE/Wm/Rr500P\nRK+Lh9x5eJPo5CAZ3/ANBE0=\n"
URL_PASSWORD = "s3cr3t-" + "Pa55w0rd"
FIELD_PASSWORD = "hunter2-" + "correct-horse"

# --- families from detect-secrets' detectors (issue 11) ------------------------------------------

# PyPI upload tokens are macaroons; the base64 after "pypi-" opens with the issuer (pypi.org, test.pypi.org).
PYPI_TOKEN = "pypi-" + "AgEIcHlwaS5vcmc" + "CJGE3ZDc0YzJlLTRiNjEt" + MIXED * 10 + "_xY-9"
TEST_PYPI_TOKEN = "pypi-" + "AgENdGVzdC5weXBpLm9yZw" + "IkYTg2ZjFlMC1i" + MIXED * 8
TWILIO_API_KEY_SID = "SK" + HEX32
TWILIO_ACCOUNT_SID = "AC" + HEX32[::-1]
MAILCHIMP_KEY = HEX32[16:] + HEX32[:16] + "-us" + "14"
TELEGRAM_BOT_TOKEN = "110201543" + ":" + "AAH" + MIXED * 3 + "dq"  # bot id, ':', 35 characters
# base64 of the bot's numeric user id, a timestamp, an HMAC (27 characters; 38 in newer tokens).
DISCORD_BOT_TOKEN = base64.b64encode(b"198622483471925248").decode() + "." + "Cl2FMQ" + "." + MIXED * 2 + "ZnCjm1X"
DISCORD_BOT_TOKEN_NEW = (
    base64.b64encode(b"1157239485120312345").decode().rstrip("=") + "." + "GaB3xQ" + "." + MIXED * 3 + "k9_-Zq2w"
)
AZURE_ACCOUNT_KEY = base64.b64encode(bytes(range(7, 71))).decode()  # 64 bytes: 88 characters ending "=="
AZURE_CONNECTION_STRING = (
    "DefaultEndpointsProtocol=https;AccountName=acmelogs;"
    + f"AccountKey={AZURE_ACCOUNT_KEY};EndpointSuffix=core.windows.net"
)
SQUARE_ACCESS_TOKEN = "EAAA" + "l2LRu" + MIXED * 5 + "qTs_-Fn" + "Xb3D5ZkW9YcV1uRp"  # 64 characters
SQUARE_LEGACY_TOKEN = "sq0atp-" + "RdSPeJa5" + "qDMaCesxHOjeRQ"
SQUARE_OAUTH_SECRET = "sq0csp-" + "VQgEphNJFVxfoEtJ1M_2Ka" + "CesfzP2_ugNWnlMPwZaZk"
ARTIFACTORY_API_KEY = "AKCp8" + MIXED * 6 + "jK9mN3pQ"  # 73 characters
ARTIFACTORY_PASSWORD = "AP6" + MIXED * 4 + "xYz"


# The families issue 11 added (redaction left them in clear before).
NEW_FAMILIES = frozenset(
    {
        "pypi",
        "test pypi",
        "twilio api key",
        "twilio account sid",
        "mailchimp",
        "telegram bot",
        "discord bot",
        "discord bot (new)",
        "azure storage",
        "square access token",
        "square legacy token",
        "square oauth secret",
        "artifactory api key",
        "artifactory password",
    }
)


@dataclass(frozen=True)
class SecretSample:
    family: str
    secret: str  # must appear in no output
    text: str  # a line carrying it; at most 190 characters, so a marker and it fit in run_id (200)


def _in_prose(family: str, secret: str) -> SecretSample:
    return SecretSample(family, secret, f"call failed using {secret} for auth")


SAMPLES: tuple[SecretSample, ...] = (
    _in_prose("github", GITHUB_PAT),
    _in_prose("github fine-grained", GITHUB_FINE_GRAINED),
    _in_prose("gitlab", GITLAB_TOKEN),
    _in_prose("slack bot", SLACK_BOT),
    _in_prose("slack app", SLACK_APP),
    _in_prose("aws key id", AWS_KEY_ID),
    SecretSample("aws secret", AWS_SECRET, f"aws_secret_access_key = {AWS_SECRET}"),
    _in_prose("openai", OPENAI_KEY),
    _in_prose("anthropic", ANTHROPIC_KEY),
    _in_prose("stripe", STRIPE_LIVE),
    _in_prose("google", GOOGLE_KEY),
    _in_prose("linear", LINEAR_KEY),
    _in_prose("webhook secret", WEBHOOK_SECRET),
    _in_prose("npm", NPM_TOKEN),
    _in_prose("hugging face", HF_TOKEN),
    _in_prose("sendgrid", SENDGRID_KEY),
    _in_prose("jwt", JWT),
    SecretSample("url credentials", URL_PASSWORD, f"db=postgresql://app:{URL_PASSWORD}@db.internal/prod"),
    SecretSample("password field", FIELD_PASSWORD, f'{{"password": "{FIELD_PASSWORD}"}}'),
    SecretSample(
        "pem private key",
        PEM_BODY.split("\n", 1)[0],
        f"-----BEGIN RSA PRIVATE KEY-----\n{PEM_BODY}-----END RSA PRIVATE KEY-----",
    ),
    _in_prose("pypi", PYPI_TOKEN),
    _in_prose("test pypi", TEST_PYPI_TOKEN),
    _in_prose("twilio api key", TWILIO_API_KEY_SID),
    _in_prose("twilio account sid", TWILIO_ACCOUNT_SID),
    _in_prose("mailchimp", MAILCHIMP_KEY),
    SecretSample("telegram bot", TELEGRAM_BOT_TOKEN, f"GET https://api.telegram.org/bot{TELEGRAM_BOT_TOKEN}/getMe"),
    _in_prose("discord bot", DISCORD_BOT_TOKEN),
    _in_prose("discord bot (new)", DISCORD_BOT_TOKEN_NEW),
    SecretSample("azure storage", AZURE_ACCOUNT_KEY, AZURE_CONNECTION_STRING),
    _in_prose("square access token", SQUARE_ACCESS_TOKEN),
    _in_prose("square legacy token", SQUARE_LEGACY_TOKEN),
    _in_prose("square oauth secret", SQUARE_OAUTH_SECRET),
    _in_prose("artifactory api key", ARTIFACTORY_API_KEY),
    SecretSample(
        "artifactory password",
        ARTIFACTORY_PASSWORD,
        f"jfrog artifactory refused the deploy user, password {ARTIFACTORY_PASSWORD}",
    ),
)
