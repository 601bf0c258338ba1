"""crypto: AES-256-GCM with key ids, associated data binding and key rotation."""

from __future__ import annotations

import base64
import os

import pytest

from lightkeeper.crypto import TokenCipher, generate_key, key_id, parse_key
from lightkeeper.errors import ConfigError, DecryptError

KEY = os.urandom(32)
OTHER = os.urandom(32)
PLAIN = "access-token-abcdef-0123456789"


@pytest.fixture
def cipher() -> TokenCipher:
    return TokenCipher(KEY)


def test_round_trip(cipher: TokenCipher) -> None:
    token = cipher.encrypt(PLAIN, connection_id=7, field="access_token")
    assert token.startswith(f"lk1:{key_id(KEY)}:")
    assert cipher.decrypt(token, connection_id=7, field="access_token") == PLAIN


def test_round_trip_unicode_and_empty(cipher: TokenCipher) -> None:
    for text in ("", "ünïcødé ✓"):
        assert cipher.decrypt_text(cipher.encrypt_text(text, context="c"), context="c") == text


def test_fresh_nonce_each_time(cipher: TokenCipher) -> None:
    first = cipher.encrypt(PLAIN, connection_id=1, field="access_token")
    second = cipher.encrypt(PLAIN, connection_id=1, field="access_token")
    assert first != second


def test_ciphertext_does_not_contain_plaintext(cipher: TokenCipher) -> None:
    token = cipher.encrypt(PLAIN, connection_id=1, field="refresh_token")
    assert PLAIN not in token
    data = base64.urlsafe_b64decode(token.split(":")[2] + "==")
    assert PLAIN.encode() not in data


@pytest.mark.parametrize(("connection_id", "field"), [(2, "access_token"), (1, "refresh_token")])
def test_bound_to_connection_and_field(cipher: TokenCipher, connection_id: int, field: str) -> None:
    token = cipher.encrypt(PLAIN, connection_id=1, field="access_token")
    with pytest.raises(DecryptError) as info:
        cipher.decrypt(token, connection_id=connection_id, field=field)
    assert PLAIN not in str(info.value)


def test_generic_context_binding(cipher: TokenCipher) -> None:
    token = cipher.encrypt_text("verifier", context="oauth_states:abc")
    assert cipher.decrypt_text(token, context="oauth_states:abc") == "verifier"
    with pytest.raises(DecryptError):
        cipher.decrypt_text(token, context="oauth_states:abd")


def test_connection_methods_use_connection_context(cipher: TokenCipher) -> None:
    token = cipher.encrypt(PLAIN, connection_id=3, field="access_token")
    assert cipher.decrypt_text(token, context="lightspeed_connections:3:access_token") == PLAIN


def test_tampered_byte_fails(cipher: TokenCipher) -> None:
    token = cipher.encrypt(PLAIN, connection_id=1, field="access_token")
    prefix, kid, data = token.split(":")
    raw = bytearray(base64.urlsafe_b64decode(data + "=" * (-len(data) % 4)))
    for index in (0, 12, len(raw) - 1):  # nonce, ciphertext, tag
        changed = bytearray(raw)
        changed[index] ^= 0x01
        forged = base64.urlsafe_b64encode(bytes(changed)).rstrip(b"=").decode()
        with pytest.raises(DecryptError) as info:
            cipher.decrypt(f"{prefix}:{kid}:{forged}", connection_id=1, field="access_token")
        assert info.value.__cause__ is not None


def test_wrong_key_with_forged_key_id_fails(cipher: TokenCipher) -> None:
    # Same key id, different key: authentication, not the id, is what protects the data.
    token = TokenCipher(OTHER).encrypt(PLAIN, connection_id=1, field="access_token")
    relabelled = token.replace(key_id(OTHER), key_id(KEY))
    with pytest.raises(DecryptError, match="does not authenticate"):
        cipher.decrypt(relabelled, connection_id=1, field="access_token")


def test_unknown_key_id(cipher: TokenCipher) -> None:
    token = TokenCipher(OTHER).encrypt(PLAIN, connection_id=1, field="access_token")
    with pytest.raises(DecryptError) as info:
        cipher.decrypt(token, connection_id=1, field="access_token")
    assert str(info.value) == (
        f"ciphertext was made with key {key_id(OTHER)}, which is not configured "
        "(TOKEN_ENCRYPTION_KEY / TOKEN_ENCRYPTION_OLD_KEYS)"
    )


@pytest.mark.parametrize(
    "token",
    [
        "",
        PLAIN,
        "lk2:00000000:AAAA",
        "lk1:XYZ:AAAA",
        "lk1:0000000:AAAA",
        "lk1:00000000:",
        "lk1:00000000:AAAA",
        "lk1:00000000:!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!",
        "lk1:00000000:A",
        "lk1:00000000:AAAA:extra",
    ],
)
def test_malformed_tokens(cipher: TokenCipher, token: str) -> None:
    with pytest.raises(DecryptError):
        cipher.decrypt(token, connection_id=1, field="access_token")


def test_old_key_decrypts_and_needs_rotation() -> None:
    old_token = TokenCipher(OTHER).encrypt(PLAIN, connection_id=5, field="refresh_token")
    rotated = TokenCipher(KEY, [OTHER])
    assert rotated.decrypt(old_token, connection_id=5, field="refresh_token") == PLAIN
    assert rotated.needs_rotation(old_token)
    new_token = rotated.encrypt(PLAIN, connection_id=5, field="refresh_token")
    assert not rotated.needs_rotation(new_token)
    assert rotated.primary_key_id == key_id(KEY)
    assert rotated.key_ids == (key_id(KEY), key_id(OTHER))


def test_needs_rotation_rejects_garbage(cipher: TokenCipher) -> None:
    with pytest.raises(DecryptError):
        cipher.needs_rotation("plaintext-token")


def test_repr_hides_keys() -> None:
    cipher = TokenCipher(KEY, [OTHER])
    text = repr(cipher)
    assert key_id(KEY) in text
    for key in (KEY, OTHER):
        assert key.hex() not in text
        assert base64.b64encode(key).decode() not in text


def test_key_id_is_stable_and_short() -> None:
    assert key_id(bytes(32)) == key_id(bytes(32))
    assert len(key_id(KEY)) == 8
    assert key_id(KEY) != key_id(OTHER)


def test_cipher_refuses_wrong_key_length() -> None:
    with pytest.raises(ConfigError):
        TokenCipher(bytes(16))


def test_from_texts() -> None:
    primary, old = generate_key(), generate_key()
    cipher = TokenCipher.from_texts(primary, f" {old} ,")
    assert cipher.primary_key_id == key_id(parse_key(primary))
    assert cipher.key_ids == (key_id(parse_key(primary)), key_id(parse_key(old)))


def test_from_texts_without_key() -> None:
    with pytest.raises(ConfigError, match="TOKEN_ENCRYPTION_KEY"):
        TokenCipher.from_texts("  ", "")


# --- parse_key / generate_key ---


def test_generate_key() -> None:
    text = generate_key()
    assert len(text) == 44
    assert parse_key(text) == base64.b64decode(text)
    assert generate_key() != text


@pytest.mark.parametrize(
    "encode",
    [
        lambda key: key.hex(),
        lambda key: key.hex().upper(),
        lambda key: base64.b64encode(key).decode(),
        lambda key: base64.b64encode(key).decode().rstrip("="),
        lambda key: base64.urlsafe_b64encode(key).decode(),
        lambda key: base64.urlsafe_b64encode(key).decode().rstrip("="),
        lambda key: f"  {key.hex()}\n",
    ],
)
def test_parse_key_accepts(encode: object) -> None:
    key = bytes(range(200, 232))  # has bytes that differ between the two base64 alphabets
    assert parse_key(encode(key)) == key  # type: ignore[operator]


@pytest.mark.parametrize(
    "text",
    [
        bytes(31).hex(),
        bytes(33).hex(),
        base64.b64encode(b"s" * 31).decode(),
        base64.b64encode(b"s" * 33).decode(),
        "g" * 64,
        "secret-junk-value",
        "",
        "ab cd" * 13,
    ],
)
def test_parse_key_rejects_without_echo(text: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_key(text)
    assert str(info.value) == "TOKEN_ENCRYPTION_KEY must be 32 bytes, base64 or hex"
    assert info.value.__cause__ is None
    assert info.value.__context__ is None or text not in str(info.value.__context__)
