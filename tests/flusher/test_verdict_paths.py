"""A verdict change moves every number split by verdict: no table holds such a split without a path.

The flusher (earlier clicks a burst or honeypot unmasks) and `tracker reclassify` change verdicts
through one function, `tracker.domain.verdict_store.change_verdicts`, which moves each table's
split by deltas. A table added with a verdict split and no statement there would drift from the
events the first time a verdict changes; this finds such tables in the migrated schema.
"""

from __future__ import annotations

import re

from tracker.contract.schema import migrate
from tracker.domain.verdict_store import CHANGE_STATEMENTS

# A count split by verdict: a verdict column, or per-verdict counts.
VERDICT_COLUMNS = ["verdict", "human", "machine", "human_uniques", "machine_uniques"]
WRITE = re.compile(r"(?<!do )(?:update|insert into)\s+(\w+)")  # a statement's target, not `on conflict do update`


async def test_every_table_split_by_verdict_is_written_by_a_verdict_change(database_url, pg):
    await migrate(database_url)
    tables = {
        row["table_name"]
        for row in await pg.fetch(
            "select distinct c.table_name from information_schema.columns c"
            " join pg_class k on k.relname = c.table_name and not k.relispartition"
            " where c.table_schema = 'public' and c.column_name = any($1::text[])",
            VERDICT_COLUMNS,
        )
    }
    written = {table for sql in CHANGE_STATEMENTS for table in WRITE.findall(sql)}

    assert {"events", "message_counters", "message_hourly", "message_link_clicks"} <= tables
    assert tables - written == set(), "split by verdict, and no verdict-change path writes it"
