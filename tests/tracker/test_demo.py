"""The demo `tracker run` seeds: registered once per database, reused (with its URLs) by every later run."""

from __future__ import annotations

import asyncio

import asyncpg

from tracker.contract.tokens import verify
from tracker.domain.messages import register_message
from tracker.ops.demo import DEMO_LIST, DEMO_MESSAGE, demo_html, seed_demo


async def test_each_run_on_one_database_reuses_the_demo_message(settings, own_database) -> None:
    settings = settings.replace(database_url=own_database)
    first = await seed_demo(settings)
    again = await seed_demo(settings)
    assert not first.reused and again.reused
    assert (again.message_id, again.profile_id) == (first.message_id, first.profile_id)
    # Still printed by every run: the same pixel and links, which the edge verifies.
    assert again.open_url == first.open_url and again.click_urls == first.click_urls
    assert len(again.click_urls) == 2 and again.open_url.startswith(f"{settings.public_url}/o/")
    token = verify(settings.signing_keys, again.click_urls[1].rsplit("/", 1)[1])
    assert token is not None and (token[2], token[6]) == (first.message_id, 1)
    pg = await asyncpg.connect(own_database)
    try:
        assert await pg.fetchval("select count(*) from messages") == 1
        assert await pg.fetchval("select count(*) from resources") == 1
        assert await pg.fetchval("select count(*) from profiles") == 1
        assert await pg.fetchval("select current_version from messages") == 1
    finally:
        await pg.close()


async def test_two_runs_starting_at_once_register_one_demo(settings, own_database) -> None:
    settings = settings.replace(database_url=own_database)
    seeded = await asyncio.gather(*(seed_demo(settings) for _ in range(4)))
    assert len({demo.message_id for demo in seeded}) == 1
    assert sorted(demo.reused for demo in seeded) == [False, True, True, True]


async def test_a_changed_demo_gets_a_new_version_of_the_same_message(settings, own_database) -> None:
    settings = settings.replace(database_url=own_database)
    pg = await asyncpg.connect(own_database)
    try:
        # What an older release registered: same name and list, other content.
        await pg.execute("insert into profile_fields (name, type) values ('clicked_link', 'boolean')")
        resource_id = await pg.fetchval(
            "insert into resources (name, channel) values ($1, 'email') returning id", DEMO_LIST
        )
        older = demo_html(resource_id).replace("Welcome to the demo.", "An older demo.")
        registered = await register_message(pg, "email", DEMO_MESSAGE, older, resource_id)
        demo = await seed_demo(settings)
        assert demo.reused and demo.message_id == registered.message_id
        assert await pg.fetchval("select count(*) from messages") == 1
        assert await pg.fetchval("select current_version from messages") == 2
        token = verify(settings.signing_keys, demo.click_urls[0].rsplit("/", 1)[1])
        assert token is not None and token[5] == 2  # links minted for the new version
        content = await pg.fetchval("select content from link_table_versions where version = 2")
        assert content == demo_html(resource_id)
    finally:
        await pg.close()
