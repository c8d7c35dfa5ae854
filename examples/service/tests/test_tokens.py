import pytest
from service.tokens import TokenSigner, secret_from_env

from datalayer import ConfigError

SECRET = b"s" * 32


def test_a_token_names_its_user_until_it_expires() -> None:
    signer = TokenSigner(SECRET, ttl=60)
    token = signer.issue(42, now=1_000_000)
    assert signer.user_id(token, now=1_000_059) == 42
    assert signer.user_id(token, now=1_000_060) is None


def test_altered_or_foreign_tokens_are_refused() -> None:
    signer = TokenSigner(SECRET)
    token = signer.issue(42)
    user, expires, signature = token.split(".")
    assert signer.user_id(f"43.{expires}.{signature}") is None  # another user
    assert signer.user_id(f"{user}.{int(expires) + 3600}.{signature}") is None  # a longer life
    assert TokenSigner(b"t" * 32).user_id(token) is None  # another secret
    for junk in ("", "42", "a.b.c", "42.x.y.z", "\uff14\uff12.1.x", token + "."):
        assert signer.user_id(junk) is None


def test_the_secret_must_be_long_enough() -> None:
    with pytest.raises(ConfigError) as e:
        secret_from_env({"SERVICE_SECRET": "short"})
    assert e.value.variable == "SERVICE_SECRET"
    with pytest.raises(ConfigError):
        secret_from_env({})
    assert secret_from_env({"SERVICE_SECRET": "k" * 40}) == b"k" * 40
    with pytest.raises(ConfigError):
        TokenSigner(b"short")
