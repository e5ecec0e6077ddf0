"""Order ids minted without a system call are UUID-shaped, unique, and differ between processes."""

import uuid

from shared.ids import IdMint


def test_minted_ids_parse_as_version_4_uuids_and_never_repeat():
    mint = IdMint()

    ids = [mint.uuid() for _ in range(10_000)]

    assert len(set(ids)) == len(ids)
    assert {uuid.UUID(i).version for i in ids} == {4}
    assert all(str(uuid.UUID(i)) == i for i in ids[:10])


def test_two_mints_share_no_id_as_after_a_restart():
    first, second = IdMint(), IdMint()

    assert {first.uuid() for _ in range(100)}.isdisjoint({second.uuid() for _ in range(100)})
    assert first.short() != second.short() and len(first.short()) == 16
