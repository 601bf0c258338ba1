"""Bad input, generated (Hypothesis): cron expressions, CSV rows for stock updates, and stored ciphertexts that
were tampered with or moved. Each is refused with our error and one clear sentence, never a crash; what is
accepted is exactly what was meant.
"""

from __future__ import annotations

import string

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lightkeeper.config import load_settings
from lightkeeper.cron import check_cron
from lightkeeper.crypto import TokenCipher
from lightkeeper.errors import ConfigError, DecryptError, InputError, LightkeeperError
from lightkeeper.stock import parse_csv
from tests.helpers import TEST_KEY

FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
CRON_ATOM = st.sampled_from(["*", "0", "5", "59", "60", "*/15", "1-5", "1,2", "MON", "jan", "L", "?", "#", "-1", "x"])


def one_sentence(message: str) -> bool:
    return bool(message) and "\n" not in message and "Traceback" not in message


# -- cron ------------------------------------------------------------------------------------------------------


@FAST
@given(st.lists(CRON_ATOM, min_size=0, max_size=8).map(" ".join) | st.text(max_size=40))
def test_a_cron_expression_is_a_normalised_five_field_cron_or_a_value_error(expression: str) -> None:
    try:
        normalised = check_cron(expression)
    except ValueError as exc:
        assert one_sentence(str(exc)) and str(exc).startswith("not a valid cron expression")
        return
    assert len(normalised.split(" ")) == 5 and normalised == " ".join(expression.split())


@FAST
@given(st.lists(CRON_ATOM, min_size=6, max_size=6).map(" ".join))
def test_a_six_field_seconds_expression_is_refused(expression: str) -> None:
    with pytest.raises(ValueError, match="expected 5 fields, got 6"):
        check_cron(expression)


@pytest.mark.parametrize("expression", ["0 0 */6 * * *", "*/30 * * * * *", "0 0 0 * * ?"])
def test_a_seconds_cron_in_the_settings_is_one_config_error(expression: str) -> None:
    env = {"TOKEN_ENCRYPTION_KEY": TEST_KEY, "REFRESH_SCHEDULE": expression}
    with pytest.raises(ConfigError) as raised:
        load_settings(env=env, require=())
    assert "REFRESH_SCHEDULE" in str(raised.value) and "expected 5 fields, got 6" in str(raised.value)
    assert one_sentence(str(raised.value))


# -- CSV rows ----------------------------------------------------------------------------------------------

CELL = st.one_of(
    st.integers(-(2**70), 2**70).map(str),
    st.sampled_from(["", " ", "1.5", "1e3", "NaN", "0x10", "١٢", "+3", "--1", '"', "a,b"]),
    st.text(alphabet=string.printable, max_size=8),
)
HEADER = st.sampled_from(
    [
        "item_id,shop_id,qoh",
        "item_id,item_shop_id,qoh",
        "item_id,shop_id,item_shop_id,qoh",
        "item_id,qoh",
        "shop_id,qoh,item_id",
        "",
        "itemid,shop,qty",
    ]
)


@FAST
@given(HEADER, st.lists(st.lists(CELL, min_size=0, max_size=5), max_size=6))
def test_csv_rows_parse_exactly_or_are_refused_whole(header: str, rows: list[list[str]]) -> None:
    text = "\n".join([header, *(",".join(row) for row in rows)])
    try:
        updates = parse_csv(text)
    except InputError as exc:
        assert str(exc) and "Traceback" not in str(exc)
        return
    assert updates, "an accepted file has rows"
    for update in updates:
        assert update.item_id >= 1 and update.qoh >= 0
        assert (update.shop_id is None) != (update.item_shop_id is None)


# -- ciphertexts -----------------------------------------------------------------------------------------

CIPHER = TokenCipher.from_texts(TEST_KEY)
PLAIN = "def50" + "ab" * 40


@FAST
@given(st.data())
def test_a_tampered_ciphertext_is_a_decrypt_error(data: st.DataObject) -> None:
    sealed = CIPHER.encrypt(PLAIN, connection_id=7, field="refresh_token")
    position = data.draw(st.integers(0, len(sealed) - 1))
    replacement = data.draw(st.sampled_from(string.ascii_letters + string.digits + "-_:=+/ \x00é"))
    tampered = sealed[:position] + replacement + sealed[position + 1 :]
    cut = data.draw(st.integers(0, len(tampered)))
    for candidate in {tampered, tampered[:cut]} - {sealed}:
        with pytest.raises(DecryptError) as raised:
            CIPHER.decrypt(candidate, connection_id=7, field="refresh_token")
        assert one_sentence(str(raised.value)) and PLAIN not in str(raised.value)


@FAST
@given(st.integers(1, 2**31 - 1), st.sampled_from(["access_token", "refresh_token", "other"]))
def test_a_ciphertext_moved_to_another_row_or_field_is_a_decrypt_error(connection_id: int, field: str) -> None:
    sealed = CIPHER.encrypt(PLAIN, connection_id=7, field="refresh_token")
    if (connection_id, field) == (7, "refresh_token"):
        assert CIPHER.decrypt(sealed, connection_id=connection_id, field=field) == PLAIN
        return
    with pytest.raises(DecryptError, match="another record or field"):
        CIPHER.decrypt(sealed, connection_id=connection_id, field=field)


@FAST
@given(st.text(max_size=80))
def test_any_stored_text_decrypts_or_is_our_error(text: str) -> None:
    with pytest.raises(LightkeeperError):
        CIPHER.decrypt(text, connection_id=1, field="refresh_token")
