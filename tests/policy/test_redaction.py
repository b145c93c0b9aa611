from __future__ import annotations

import copy
import json
import time
from typing import Any

import pytest

from incident_monitor.policy.redaction import (
    MAX_DEPTH,
    REDACTED,
    REDACTED_PRIVATE_KEY,
    TRUNCATED,
    contains_secret,
    is_sensitive_key,
    redact_json,
    redact_text,
)
from support.secret_samples import (
    ANTHROPIC_KEY,
    ARTIFACTORY_API_KEY,
    ARTIFACTORY_PASSWORD,
    AWS_KEY_ID,
    AWS_SECRET,
    AWS_SESSION_KEY_ID,
    AZURE_ACCOUNT_KEY,
    AZURE_CONNECTION_STRING,
    DISCORD_BOT_TOKEN,
    DISCORD_BOT_TOKEN_NEW,
    GITHUB_FINE_GRAINED,
    GITHUB_PAT,
    GITLAB_TOKEN,
    GOOGLE_KEY,
    HF_TOKEN,
    JWT,
    LINEAR_KEY,
    MAILCHIMP_KEY,
    NEW_FAMILIES,
    NPM_TOKEN,
    OPENAI_KEY,
    PEM_BODY,
    PYPI_TOKEN,
    SAMPLES,
    SENDGRID_KEY,
    SLACK_APP,
    SLACK_BOT,
    SQUARE_ACCESS_TOKEN,
    SQUARE_LEGACY_TOKEN,
    SQUARE_OAUTH_SECRET,
    STRIPE_LIVE,
    STRIPE_RESTRICTED,
    STRIPE_TEST,
    TELEGRAM_BOT_TOKEN,
    TEST_PYPI_TOKEN,
    TWILIO_ACCOUNT_SID,
    TWILIO_API_KEY_SID,
    WEBHOOK_SECRET,
    SecretSample,
)

R = REDACTED

UUID = "123e4567-e89b-12d3-a456-426614174000"
GIT_SHA = "9fceb02d0ae598e95dc970b74767f19372d61af8"
SHA256 = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"

# --------------------------------------------------------------------------------------------------
# is_sensitive_key
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "key",
    [
        "password",
        "PASSWORD",
        "Passwd",
        "pwd",
        "secret",
        "client_secret",
        "client-secret",
        "clientSecret",
        "token",
        "access_token",
        "refresh_token",
        "id_token",
        "idToken",
        "api_key",
        "apikey",
        "API Key",
        "apiKey",
        "APIKey",
        "X-Api-Key",
        "x_api_key",
        "Authorization",
        "Proxy-Authorization",
        "cookie",
        "Set-Cookie",
        "private_key",
        "credentials",
        "session_token",
        "webhook_secret",
        "signing_key",
        "dsn",
        "aws_secret_access_key",
        "AWS_SECRET_ACCESS_KEY",
        "GITHUB_TOKEN",
        "slack_bot_token",
        "stripe_api_key",
        "db_password",
        "DB_PASS",
        "db.password",
        "spring.datasource.password",
        "--password",
        "X-Amz-Security-Token",
        "sig",
        "AccountKey",
        "accountKey",
        "accountkey",
        "SharedAccessKey",
        "SharedAccessSignature",
        "AZURE_STORAGE_ACCOUNT_KEY",
    ],
)
def test_sensitive_keys(key: str) -> None:
    assert is_sensitive_key(key)


@pytest.mark.parametrize(
    "key",
    [
        "key",
        "sort_key",
        "primary_key",
        "idempotency_key",
        "route_key",
        "fingerprint_key",
        "fingerprint",
        "token_count",
        "max_tokens",
        "maxTokens",
        "tokens_used",
        "tokens",
        "token_type",
        "password_reset_url",
        "secret_name",
        "aws_access_key_id",
        "user",
        "username",
        "bypass",
        "",
    ],
)
def test_non_sensitive_keys(key: str) -> None:
    assert not is_sensitive_key(key)


# --------------------------------------------------------------------------------------------------
# redact_text: positive cases
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Authorization: Bearer abc.def.ghi", f"Authorization: Bearer {R}"),
        ("Authorization: Basic dXNlcjpwYXNz", f"Authorization: Basic {R}"),
        ("Authorization: token abcdef123456", f"Authorization: token {R}"),
        ("authorization: bearer x", f"authorization: bearer {R}"),
        ("Authorization: abc123", f"Authorization: {R}"),
        ("Proxy-Authorization: Basic dXNlcjpwYXNz", f"Proxy-Authorization: Basic {R}"),
        ('{"Authorization": "Bearer abc.def"}', f'{{"Authorization": "Bearer {R}"}}'),
        ("{'Authorization': 'Bearer abc.def'}", f"{{'Authorization': 'Bearer {R}'}}"),
        ("curl -H 'Authorization: Bearer abc123xyz'", f"curl -H 'Authorization: Bearer {R}'"),
        ("sent Bearer abc123def456 to api", f"sent Bearer {R} to api"),
        ("Bearer abc.def.ghi", f"Bearer {R}"),
        ("Bearer AbCdEfGhIjKlMnOpQr", f"Bearer {R}"),
        ("Cookie: sid=abc123; theme=dark", f"Cookie: {R}"),
        ("Set-Cookie: sid=abc123; Path=/; HttpOnly", f"Set-Cookie: {R}"),
    ],
)
def test_authorization_and_bearer(text: str, expected: str) -> None:
    assert redact_text(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("password=hunter2 user=bob", f"password={R} user=bob"),
        ("password: hunter2", f"password: {R}"),
        ("password : hunter2", f"password : {R}"),
        ("PASSWORD=hunter2", f"PASSWORD={R}"),
        ("passwd=hunter2", f"passwd={R}"),
        ("pwd=hunter2", f"pwd={R}"),
        ("secret=s3cr3t", f"secret={R}"),
        ("token=abc", f"token={R}"),
        ("api_key=abc123", f"api_key={R}"),
        ("apikey=abc123", f"apikey={R}"),
        ("access_token=abc", f"access_token={R}"),
        ("client_secret: abc", f"client_secret: {R}"),
        ("private_key='abc'", f"private_key='{R}'"),
        ('password="hunter 2" ok', f'password="{R}" ok'),
        ("password='hunter 2' ok", f"password='{R}' ok"),
        ('password="a\\"b" ok', f'password="{R}" ok'),
        ('password="null"', f'password="{R}"'),
        ('{"password": "hunter2", "user": "bob"}', f'{{"password": "{R}", "user": "bob"}}'),
        ('{"pin": 1, "token":"abc"}', f'{{"pin": 1, "token":"{R}"}}'),
        ('{\\"password\\": \\"hunter2\\"}', f'{{\\"password\\": \\"{R}\\"}}'),
        ('{\\"Authorization\\": \\"Bearer abc\\"}', f'{{\\"Authorization\\": \\"Bearer {R}\\"}}'),
        ('"message": "login failed, password: hunter2"', f'"message": "login failed, password: {R}"'),
        ("GITHUB_TOKEN=abc123", f"GITHUB_TOKEN={R}"),
        ("export AWS_SECRET_ACCESS_KEY=abc123", f"export AWS_SECRET_ACCESS_KEY={R}"),
        ("aws_secret_access_key = abc123", f"aws_secret_access_key = {R}"),
        ("X-Api-Key: abc123", f"X-Api-Key: {R}"),
        ("apiKey: abc123", f"apiKey: {R}"),
        ("spring.datasource.password=hunter2", f"spring.datasource.password={R}"),
        ("Server=db;User Id=sa;Password=hunter2;", f"Server=db;User Id=sa;Password={R};"),
        ("mysql --password=hunter2 --verbose", f"mysql --password={R} --verbose"),
        ("mysql --password hunter2 --verbose", f"mysql --password {R} --verbose"),
        ("login password=hunter2, retry", f"login password={R}, retry"),
        ("{password: hunter2}", f"{{password: {R}}}"),
        ("<password>hunter2</password>", f"<password>{R}</password>"),
        ("<apiKey>abc</apiKey><user>bob</user>", f"<apiKey>{R}</apiKey><user>bob</user>"),
    ],
)
def test_sensitive_key_value_pairs(text: str, expected: str) -> None:
    assert redact_text(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("https://user:pass@example.com/x", f"https://user:{R}@example.com/x"),
        ("https://user:p@ss@example.com/x", f"https://user:{R}@example.com/x"),
        ("postgresql://app:s3cret@db.internal:5432/prod", f"postgresql://app:{R}@db.internal:5432/prod"),
        ("mongodb+srv://app:s3cret@cluster0.example.net", f"mongodb+srv://app:{R}@cluster0.example.net"),
        ("redis://:s3cret@cache:6379/0", f"redis://:{R}@cache:6379/0"),
        ("jdbc:mysql://app:s3cret@db/prod", f"jdbc:mysql://app:{R}@db/prod"),
        ("dsn: postgres://app:s3cret@db/prod", f"dsn: {R}"),
        (
            "GET https://api.example.com/v1?token=abc&api_key=def&page=2",
            f"GET https://api.example.com/v1?token={R}&api_key={R}&page=2",
        ),
        (
            "https://x.example.com/cb#access_token=abc&expires=3600",
            f"https://x.example.com/cb#access_token={R}&expires=3600",
        ),
        (
            "https://acct.blob.core.windows.net/c/f?sv=2022&sig=abc%2Bdef",
            f"https://acct.blob.core.windows.net/c/f?sv=2022&sig={R}",
        ),
        ("https://b.s3.amazonaws.com/k?X-Amz-Signature=abc123", f"https://b.s3.amazonaws.com/k?X-Amz-Signature={R}"),
        ("https://hooks.slack.com/services/T000/B000/XXXXXXXX", f"https://hooks.slack.com/services/{R}"),
        ("https://discord.com/api/webhooks/123/abc-def", f"https://discord.com/api/webhooks/{R}"),
    ],
)
def test_urls_with_credentials(text: str, expected: str) -> None:
    assert redact_text(text) == expected


@pytest.mark.parametrize(
    "token",
    [
        GITHUB_PAT,
        "gho_" + GITHUB_PAT[4:],
        "ghu_" + GITHUB_PAT[4:],
        "ghs_" + GITHUB_PAT[4:],
        "ghr_" + GITHUB_PAT[4:],
        GITHUB_FINE_GRAINED,
        GITLAB_TOKEN,
        SLACK_BOT,
        "xoxp-" + SLACK_BOT[5:],
        SLACK_APP,
        AWS_KEY_ID,
        AWS_SESSION_KEY_ID,
        OPENAI_KEY,
        ANTHROPIC_KEY,
        STRIPE_LIVE,
        STRIPE_RESTRICTED,
        STRIPE_TEST,
        GOOGLE_KEY,
        LINEAR_KEY,
        WEBHOOK_SECRET,
        NPM_TOKEN,
        HF_TOKEN,
        SENDGRID_KEY,
        JWT,
    ],
)
def test_well_known_token_formats(token: str) -> None:
    # Found in the middle of prose, without any key name to hint at them.
    assert redact_text(f"using {token} for the call") == f"using {R} for the call"
    assert redact_text(f"({token})") == f"({R})"


def test_aws_secret_access_key_by_name() -> None:
    text = f"[default]\naws_access_key_id = {AWS_KEY_ID}\naws_secret_access_key = {AWS_SECRET}\n"
    assert redact_text(text) == f"[default]\naws_access_key_id = {R}\naws_secret_access_key = {R}\n"


def test_token_in_header_keeps_scheme() -> None:
    assert redact_text(f"Authorization: token {GITHUB_PAT}") == f"Authorization: token {R}"
    assert redact_text(f"Authorization: Bearer {JWT}") == f"Authorization: Bearer {R}"
    assert redact_text(f'{{"headers": {{"x-api-key": "{ANTHROPIC_KEY}"}}}}') == (
        f'{{"headers": {{"x-api-key": "{R}"}}}}'
    )


# --------------------------------------------------------------------------------------------------
# Families from detect-secrets' detectors (issue 11): each in the setting it is usually leaked in
# --------------------------------------------------------------------------------------------------


def test_pypi_upload_tokens() -> None:
    command = f"twine upload -u __token__ -p {PYPI_TOKEN} dist/*"
    assert redact_text(command) == f"twine upload -u __token__ -p {R} dist/*"
    assert redact_text(f"uploading to test.pypi.org with {TEST_PYPI_TOKEN}.") == f"uploading to test.pypi.org with {R}."


def test_twilio_account_sid_and_api_key_sid() -> None:
    url = f"POST https://api.twilio.com/2010-04-01/Accounts/{TWILIO_ACCOUNT_SID}/Messages.json"
    assert redact_text(url) == f"POST https://api.twilio.com/2010-04-01/Accounts/{R}/Messages.json"
    assert redact_text(f"Client('{TWILIO_API_KEY_SID}', api_secret, account_sid='{TWILIO_ACCOUNT_SID}')") == (
        f"Client('{R}', api_secret, account_sid='{R}')"
    )


def test_mailchimp_api_keys() -> None:
    assert redact_text(f"mc = MailChimp(mc_api='{MAILCHIMP_KEY}')") == f"mc = MailChimp(mc_api='{R}')"
    assert redact_text(f"401 from us14.api.mailchimp.com for {MAILCHIMP_KEY}") == (
        f"401 from us14.api.mailchimp.com for {R}"
    )


def test_telegram_bot_tokens() -> None:
    # In the API URL the token follows "bot" directly; the path around it stays readable.
    assert redact_text(f"https://api.telegram.org/bot{TELEGRAM_BOT_TOKEN}/sendMessage") == (
        f"https://api.telegram.org/bot{R}/sendMessage"
    )
    assert redact_text(f"Bot('{TELEGRAM_BOT_TOKEN}').get_me() raised Unauthorized") == (
        f"Bot('{R}').get_me() raised Unauthorized"
    )


@pytest.mark.parametrize("token", [DISCORD_BOT_TOKEN, DISCORD_BOT_TOKEN_NEW])
def test_discord_bot_tokens(token: str) -> None:
    assert redact_text(f"client.run('{token}') failed: 401") == f"client.run('{R}') failed: 401"
    assert redact_text(f"the token {token} was reset by Discord") == f"the token {R} was reset by Discord"


def test_azure_storage_account_key_in_a_connection_string() -> None:
    # Only the key goes: the account, protocol and endpoint are what whoever handles the incident needs.
    assert redact_text(f'conn = "{AZURE_CONNECTION_STRING}"') == (
        f'conn = "DefaultEndpointsProtocol=https;AccountName=acmelogs;AccountKey={R};EndpointSuffix=core.windows.net"'
    )
    assert redact_text(f"AZURE_STORAGE_ACCOUNT_KEY={AZURE_ACCOUNT_KEY}") == f"AZURE_STORAGE_ACCOUNT_KEY={R}"
    service_bus = (
        f"Endpoint=sb://acme.servicebus.windows.net/;SharedAccessKeyName=send;SharedAccessKey={AZURE_ACCOUNT_KEY}"
    )
    assert redact_text(service_bus) == (
        f"Endpoint=sb://acme.servicebus.windows.net/;SharedAccessKeyName=send;SharedAccessKey={R}"
    )
    assert redact_json({"AccountKey": AZURE_ACCOUNT_KEY, "AccountName": "acmelogs"}) == {
        "AccountKey": R,
        "AccountName": "acmelogs",
    }


@pytest.mark.parametrize("token", [SQUARE_ACCESS_TOKEN, SQUARE_LEGACY_TOKEN, SQUARE_OAUTH_SECRET])
def test_square_tokens_and_oauth_secrets(token: str) -> None:
    assert redact_text(f"square.Client('{token}', 'production') failed") == f"square.Client('{R}', 'production') failed"
    assert redact_text(f"square rejected {token}: UNAUTHORIZED") == f"square rejected {R}: UNAUTHORIZED"


def test_artifactory_api_keys() -> None:
    assert redact_text(f"curl -H 'X-JFrog-Art-Api: {ARTIFACTORY_API_KEY}' https://acme.jfrog.io/api/system/ping") == (
        f"curl -H 'X-JFrog-Art-Api: {R}' https://acme.jfrog.io/api/system/ping"
    )


def test_artifactory_passwords_where_the_text_names_artifactory() -> None:
    assert redact_text(f"artifactory deploy as ci-bot with {ARTIFACTORY_PASSWORD} returned 401") == (
        f"artifactory deploy as ci-bot with {R} returned 401"
    )
    assert redact_text(f"JFrog CLI: ci-bot / {ARTIFACTORY_PASSWORD}") == f"JFrog CLI: ci-bot / {R}"


@pytest.mark.parametrize("sample", [s for s in SAMPLES if s.family in NEW_FAMILIES], ids=lambda s: s.family)
def test_every_new_family_is_recognised_idempotently(sample: SecretSample) -> None:
    once = redact_text(sample.text)
    assert sample.secret not in once
    assert redact_text(once) == once
    assert contains_secret(sample.text) and not contains_secret(once)


MD5 = "d41d8cd98f00b204e9800998ecf8427e"


@pytest.mark.parametrize(
    "text",
    [
        # Identifiers and digests this monitor writes itself: redacting them would break evidence digests.
        f"sha256:{SHA256}",
        f"SHA256:AC{SHA256.upper()[2:]}",
        "inc_0123456789abcdef drf_89abcdef01234567 rcp_fedcba9876543210",
        f"fp_{MD5} idem_{MD5[::-1]} pv_{MD5[:16]}",
        UUID.upper(),
        MD5,
        # Near misses of the new formats.
        f"{MD5}-us-east-1",
        f"{MD5}-12",
        f"{MD5}-us",
        f"AC{MD5[:31]}",
        f"SK{MD5}a",
        f"xAC{MD5}",
        "1732612345:connection-reset-by-peer-while-readin",
        "12:30:45.123456789",
        "NetworkConnectionManager.handle.processIncomingRequestsQueue",
        "APAC2024RegionCluster01 is degraded",
        "AKCMANAGEMENTSERVERPRIMARY",
        "EAAA" + "A" * 60,
        "EAAA" + "Zm9vYmFy" * 12,
        "pypi-AgE-too-short",
        "pypi-package-index-mirror",
        "sq0idp-" + "r34HdSnJVWaCesH3dnJrGA",
        "sq0atp- is the legacy prefix",
        "AccountName=acmelogs;EndpointSuffix=core.windows.net",
    ],
)
def test_new_families_leave_ordinary_text_alone(text: str) -> None:
    assert redact_text(text) == text


# --------------------------------------------------------------------------------------------------
# PEM private keys
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["RSA ", "EC ", "OPENSSH ", "DSA ", "ENCRYPTED ", ""])
def test_pem_private_key_block(kind: str) -> None:
    pem = f"-----BEGIN {kind}PRIVATE KEY-----\n{PEM_BODY}-----END {kind}PRIVATE KEY-----"
    assert redact_text(f"loaded key:\n{pem}\ndone") == f"loaded key:\n{REDACTED_PRIVATE_KEY}\ndone"


def test_pem_encrypted_legacy_headers() -> None:
    pem = (
        "-----BEGIN RSA PRIVATE KEY-----\nProc-Type: 4,ENCRYPTED\nDEK-Info: AES-128-CBC,3F17F5316E2BAC89\n\n"
        f"{PEM_BODY}-----END RSA PRIVATE KEY-----\n"
    )
    assert redact_text(pem) == f"{REDACTED_PRIVATE_KEY}\n"


def test_pem_pgp_private_key_block() -> None:
    pem = f"-----BEGIN PGP PRIVATE KEY BLOCK-----\n\n{PEM_BODY}-----END PGP PRIVATE KEY BLOCK-----"
    assert redact_text(pem) == REDACTED_PRIVATE_KEY


def test_pem_with_escaped_newlines_in_json_string() -> None:
    # A GCP service-account file pasted as text: the key is one JSON string with literal "\n".
    body = PEM_BODY.replace("\n", "\\n")
    text = f'{{"type": "x", "pk": "-----BEGIN PRIVATE KEY-----\\n{body}-----END PRIVATE KEY-----\\n"}}'
    assert redact_text(text) == f'{{"type": "x", "pk": "{REDACTED_PRIVATE_KEY}\\n"}}'


def test_two_pem_blocks_keep_text_between() -> None:
    pem = f"-----BEGIN EC PRIVATE KEY-----\n{PEM_BODY}-----END EC PRIVATE KEY-----"
    assert redact_text(f"{pem}\nmiddle\n{pem}") == f"{REDACTED_PRIVATE_KEY}\nmiddle\n{REDACTED_PRIVATE_KEY}"


def test_truncated_pem_body_is_redacted() -> None:
    # The log was cut before END: the base64 that is there is still key material.
    text = "-----BEGIN RSA PRIVATE KEY-----\nMIIEpAIBAAKCAQEA3Tz2mr7SZiAMfQyuvBjM9Oi\nZ1BjP5CE/Wm/Rr500PRK"
    assert redact_text(text) == REDACTED_PRIVATE_KEY
    assert redact_text(text + " [log truncated]") == f"{REDACTED_PRIVATE_KEY} [log truncated]"


@pytest.mark.parametrize(
    "text",
    [
        f"-----BEGIN CERTIFICATE-----\n{PEM_BODY}-----END CERTIFICATE-----",
        f"-----BEGIN PUBLIC KEY-----\n{PEM_BODY}-----END PUBLIC KEY-----",
        "the PRIVATE KEY file was missing",
    ],
)
def test_public_pem_material_is_kept(text: str) -> None:
    assert redact_text(text) == text


# --------------------------------------------------------------------------------------------------
# redact_text: negative cases
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "",
        "the token bucket overflowed",
        "password reset page returned 500",
        "Bearer of bad news",
        "Bearer authentication failed",
        "the bearer token was missing",
        "secret management is hard",
        "Authorization failed for user bob",
        UUID,
        f"request {UUID} failed",
        GIT_SHA,
        f"commit {GIT_SHA}",
        SHA256,
        f"sha256:{SHA256}",
        "2024-05-01T12:30:45.123Z",
        "2024-05-01 12:30:45+02:00",
        "/var/lib/app/secrets/token.json",
        "C:\\Users\\bob\\AppData\\token.txt",
        "./config/password_policy.yaml:12",
        "fingerprint=abc123",
        "max_tokens=4096",
        "tokens_used: 1234 token_count=12 maxTokens=8",
        "sort_key=created_at primary_key=id idempotency_key=abc-123",
        "token_type=bearer",
        "https://example.com/path?page=2&sort=desc",
        "https://example.com:8443/health",
        "ssh://git@github.com/org/repo.git",
        "user@example.com",
        "if token == null: return",
        "use --password-stdin to avoid this",
        "mysql --password --verbose",
        "id_" + AWS_KEY_ID,
        "mask-" + OPENAI_KEY[3:],
        "scikit uses sk-learn-compatible-estimators-everywhere",
        "ghp_ too short",
        "AKIA is a prefix",
        "risk-assessment-for-the-quarterly-review",
        "password: ",
        'password=""',
        '{"password": null, "token": None, "secret": false, "api_key": true}',
        f"password={R} and Authorization: Bearer {R}",
    ],
)
def test_unchanged(text: str) -> None:
    assert redact_text(text) == text
    assert not contains_secret(text)


# --------------------------------------------------------------------------------------------------
# contains_secret, determinism, idempotence
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text", ["password=hunter2", f"see {GITHUB_PAT}", "https://u:p@h/x", "Authorization: Basic Zm9vOmJhcg=="]
)
def test_contains_secret(text: str) -> None:
    assert contains_secret(text)


_MIXED_LOG = "\n".join(
    [
        "POST /hook Authorization: Bearer abc.def.ghi",
        f"env GITHUB_TOKEN={GITHUB_PAT} STRIPE={STRIPE_LIVE}",
        "db=postgresql://app:s3cret@db/prod?sslmode=require",
        '{"password": "hunter2", "note": "token: xyz123"}',
        f"-----BEGIN PRIVATE KEY-----\n{PEM_BODY}-----END PRIVATE KEY-----",
        f"jwt {JWT} uuid {UUID} sha {SHA256}",
        "Cookie: a=1; b=2",
    ]
)


def test_redaction_is_idempotent_and_deterministic() -> None:
    once = redact_text(_MIXED_LOG)
    assert redact_text(_MIXED_LOG) == once
    assert redact_text(once) == once
    assert not contains_secret(once)
    for secret in ("abc.def.ghi", GITHUB_PAT, STRIPE_LIVE, "s3cret", "hunter2", "xyz123", "MIIE", JWT, "a=1"):
        assert secret not in once
    for kept in ("POST /hook", "sslmode=require", UUID, SHA256, "Bearer [REDACTED]"):
        assert kept in once


# --------------------------------------------------------------------------------------------------
# redact_json
# --------------------------------------------------------------------------------------------------


def test_redact_json_sensitive_keys_replaced_whatever_their_type() -> None:
    value = {
        "password": "hunter2",
        "pin_token": 123456,
        "credentials": {"user": "bob", "pass": "x"},
        "api_keys": ["a", "b"],
        "client_secret": ["a", "b"],
        "ratio_secret": 1.5,
        "user": "bob",
    }
    assert redact_json(value) == {
        "password": R,
        "pin_token": R,
        "credentials": R,
        "api_keys": ["a", "b"],
        "client_secret": R,
        "ratio_secret": R,
        "user": "bob",
    }


def test_redact_json_keeps_null_and_boolean_under_sensitive_keys() -> None:
    assert redact_json({"token": None, "has_password": True, "password": False}) == {
        "token": None,
        "has_password": True,
        "password": False,
    }


def test_redact_json_strings_everywhere_go_through_redact_text() -> None:
    value = {
        "log": ["ok", "retry with password=hunter2", {"url": "https://u:pw@h/x"}],
        "stats": {"max_tokens": 4096, "tokens_used": 12, "ratio": 0.5, "ok": True, "none": None},
        "fingerprint": SHA256,
    }
    assert redact_json(value) == {
        "log": ["ok", f"retry with password={R}", {"url": f"https://u:{R}@h/x"}],
        "stats": {"max_tokens": 4096, "tokens_used": 12, "ratio": 0.5, "ok": True, "none": None},
        "fingerprint": SHA256,
    }


def test_redact_json_redacts_secrets_used_as_keys() -> None:
    value = {GITHUB_PAT: {"scopes": ["repo"]}, "user": "bob"}
    assert redact_json(value) == {R: {"scopes": ["repo"]}, "user": "bob"}


def test_redact_json_keys_that_collide_after_redaction_are_kept_apart() -> None:
    value = {GITHUB_PAT: 1, STRIPE_LIVE: 2, R: 3}
    assert redact_json(value) == {R: 1, f"{R} #2": 2, f"{R} #3": 3}


@pytest.mark.parametrize("name_field", ["name", "Name", "key"])
def test_redact_json_name_value_pairs(name_field: str) -> None:
    value = {
        "env": [
            {name_field: "DB_PASSWORD", "value": "hunter2"},
            {name_field: "LOG_LEVEL", "value": "debug"},
        ]
    }
    assert redact_json(value) == {
        "env": [
            {name_field: "DB_PASSWORD", "value": R},
            {name_field: "LOG_LEVEL", "value": "debug"},
        ]
    }


def test_redact_json_does_not_mutate_input() -> None:
    value: dict[str, Any] = {"password": "x", "nested": [{"token": "y"}, "password=z"], "t": (1, "a")}
    before = copy.deepcopy(value)
    result = redact_json(value)
    assert value == before
    assert result["nested"] is not value["nested"]
    assert result["t"] == [1, "a"]


def test_redact_json_scalars() -> None:
    assert redact_json("password=hunter2") == f"password={R}"
    assert redact_json(None) is None
    assert redact_json(7) == 7
    assert redact_json(True) is True


def test_redact_json_output_is_json_serialisable_and_deterministic() -> None:
    value = {"b": [{"secret": 1}], "a": f"token {JWT}", "c": {"Authorization": "Bearer x"}}
    first = json.dumps(redact_json(value), sort_keys=True)
    assert first == json.dumps(redact_json(value), sort_keys=True)
    assert JWT not in first


def _nest(depth: int) -> Any:
    value: Any = "leaf"
    for _ in range(depth):
        value = {"child": value}
    return value


def test_redact_json_depth_limit() -> None:
    result = redact_json(_nest(MAX_DEPTH + 5))
    node = result
    for _ in range(MAX_DEPTH):
        assert isinstance(node, dict)
        node = node["child"]
    assert node == TRUNCATED


def test_redact_json_at_depth_limit_is_untouched() -> None:
    value = _nest(MAX_DEPTH)
    assert redact_json(value) == value


def test_redact_json_survives_cycles() -> None:
    cyclic: list[Any] = ["x"]
    cyclic.append(cyclic)
    result = redact_json(cyclic)
    assert result[0] == "x"
    assert TRUNCATED in json.dumps(result)


def test_redact_json_rejects_non_json_types_without_echoing_them() -> None:
    with pytest.raises(TypeError, match="bytes") as excinfo:
        redact_json({"blob": b"hunter2"})
    assert "hunter2" not in str(excinfo.value)


# --------------------------------------------------------------------------------------------------
# Linear time on hostile input
# --------------------------------------------------------------------------------------------------

_ONE_MB = 1_000_000


@pytest.mark.parametrize(
    "unit",
    [
        "a",
        "a=",
        "a-",
        "a.",
        "--a ",
        'password="',
        'password=\\"',
        "token: ",
        "-----BEGIN RSA PRIVATE KEY-----\n",
        "-----END ",
        "https://a:",
        "a://a:",
        "http://a:b@",
        "eyJaaaaa.",
        "Bearer ",
        "sk-",
        "SG.",
        "<a>",
        "Cookie:",
        "[REDACTED",
        "\n",
        "-us1",
        "0123456789abcdef0123456789abcdef-us",
        "12345678:",
        "1234567890:a",
        "AC",
        "M.",
        "MTk4NjIyNDgzNDcxOTI1MjQ4.",
        "EAAA",
        "pypi-AgE",
        "sq0atp-",
        "AKC",
        "jfrog AP1",
    ],
)
def test_pathological_megabyte_input_finishes(unit: str) -> None:
    # A guard against catastrophic backtracking, not a benchmark: quadratic behaviour on 1 MB would take
    # hours, linear takes well under a second, so the bound is deliberately loose.
    text = unit * (_ONE_MB // len(unit))
    started = time.monotonic()
    result = redact_text(text)
    assert time.monotonic() - started < 10
    assert isinstance(result, str)
