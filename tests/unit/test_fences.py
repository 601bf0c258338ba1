"""Fencing tokens stay unique across ``fork()``: a child forked after import draws a prefix of its own."""

from __future__ import annotations

import os

from lightkeeper.store.leases import new_lease_token


def test_a_forked_child_never_repeats_its_parents_tokens() -> None:
    new_lease_token()  # the parent has handed out tokens before the fork
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report its next tokens and leave at once
        os.close(read)
        os.write(write, " ".join(new_lease_token() for _ in range(3)).encode())
        os._exit(0)
    os.close(write)
    with os.fdopen(read) as pipe:
        child = pipe.read().split()
    os.waitpid(pid, 0)
    parent = [new_lease_token() for _ in range(3)]
    assert len(child) == 3
    assert not set(child) & set(parent)
    assert child[0][:24] != parent[0][:24]  # another prefix, not just another count
