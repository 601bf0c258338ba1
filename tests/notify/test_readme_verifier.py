"""The README's webhook verifier, as a receiver copies it: the README's first Python block that uses ``hmac`` is
one self-contained function, ``verify(secret, body, signature) -> bool``, on the standard library alone; it
accepts real signed deliveries and returns False, never raising, for anything malformed."""

from __future__ import annotations

import ast
import inspect
import re
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from lightkeeper.notify import sign
from lightkeeper.notify import verify as library_verify
from lightkeeper.simulator import SimulatorControl
from tests.helpers import connect
from tests.integration.conftest import KeeperFactory
from tests.notify.conftest import SECRET, Receiver

README = Path(__file__).resolve().parents[2] / "README.md"
Verify = Callable[[str, bytes, str], bool]


def readme_verifier_source() -> str:
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.DOTALL)
    return next(block for block in blocks if "hmac" in block)


@pytest.fixture(scope="module")
def readme_verify() -> Verify:
    source = readme_verifier_source()
    namespace: dict[str, object] = {"__name__": "receiver"}
    # As a receiver pastes it into a fresh module (without this file's `from __future__` flags).
    exec(compile(source, "README.md", "exec", dont_inherit=True), namespace)
    verify = namespace["verify"]
    assert callable(verify)
    return verify  # type: ignore[return-value]


def test_the_block_is_one_function_on_the_standard_library_alone() -> None:
    tree = ast.parse(readme_verifier_source())
    functions = [node for node in tree.body if isinstance(node, ast.FunctionDef)]
    assert [f.name for f in functions] == ["verify"]
    imported = {
        alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names
    }
    imported |= {
        node.module.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module
    }
    assert imported and imported <= sys.stdlib_module_names
    assert all(isinstance(node, ast.Import | ast.ImportFrom | ast.FunctionDef) for node in tree.body)


def test_its_signature_is_secret_body_signature_returning_bool(readme_verify: Verify) -> None:
    parameters = list(inspect.signature(readme_verify).parameters.values())
    assert [(p.name, p.annotation) for p in parameters[:3]] == [
        ("secret", str),
        ("body", bytes),
        ("signature", str),
    ]
    assert all(p.default is not inspect.Parameter.empty for p in parameters[3:])
    assert inspect.signature(readme_verify).return_annotation is bool


def test_it_accepts_real_deliveries_and_refuses_them_altered(
    readme_verify: Verify, notifying: KeeperFactory, receiver: Receiver, sim: SimulatorControl
) -> None:
    keeper = notifying()
    record = connect(keeper, "merchant-1")
    sim.revoke_account(record.account_id)
    keeper.refresh()
    receiver.fail_next(1)
    keeper.deliver_events()
    keeper.retry_event(keeper.events()[0].id)  # a second attempt, signed afresh

    assert len(receiver.requests) == 2
    for request in receiver.requests:
        header = request.headers["x-lightkeeper-signature"]
        assert readme_verify(SECRET, request.body, header) is True
        assert readme_verify("another-secret-0123456789", request.body, header) is False
        assert readme_verify(SECRET, request.body + b" ", header) is False
        assert readme_verify(SECRET, request.body.replace(b"merchant-1", b"merchant-2"), header) is False


def _malformed(body: bytes) -> list[object]:
    now = int(time.time())
    good = sign(SECRET, now, body)
    digest = good.split("v1=")[1]
    return [
        "",
        ",",
        "garbage",
        f"v1={digest}",  # no t
        f"t={now}",  # no v1
        f"t={now},v1=",
        f"t=,v1={digest}",
        f"t=abc,v1={digest}",
        f"t={now}.5,v1={digest}",
        f"t=-{now},v1={digest}",
        f"t=²{now},v1={digest}",  # a non-ASCII digit
        f"t=١٢٣,v1={digest}",  # Arabic-Indic digits: int() would take them
        f"t={now},v1={digest[:-1]}é",  # non-ASCII in the signature: TypeError in hmac.compare_digest on str
        f"t={now},v1=é{'ø' * 63}",
        f"t={now},t={now},v1={digest}",  # which t was signed?
        f"t={now},v1={digest.upper()}",
        sign(SECRET, now - 3600, body),  # an old t: a replay
        sign(SECRET, now + 3600, body),
        f"t={'9' * 400},v1={digest}",
        "t=\x00,v1=\x00",
        None,
        b"t=1,v1=00",
        12,
    ]


def test_it_returns_false_for_anything_malformed_and_never_raises(readme_verify: Verify) -> None:
    body = b'{"id":"evt_0123","type":"connection.expired"}'
    assert readme_verify(SECRET, body, sign(SECRET, int(time.time()), body)) is True
    for signature in _malformed(body):
        assert readme_verify(SECRET, body, signature) is False, signature  # type: ignore[arg-type]
    assert readme_verify(SECRET, "not bytes", sign(SECRET, int(time.time()), b"x")) is False  # type: ignore[arg-type]
    assert readme_verify(None, body, sign(SECRET, int(time.time()), body)) is False  # type: ignore[arg-type]


def test_the_library_verifier_agrees(readme_verify: Verify) -> None:
    body = b'{"id":"evt_0123"}'
    cases = [sign(SECRET, int(time.time()), body), *_malformed(body)]
    for signature in cases:
        expected = readme_verify(SECRET, body, signature)  # type: ignore[arg-type]
        assert library_verify(SECRET, signature, body) is expected, signature  # type: ignore[arg-type]
