"""PostgreSQL persistence: the embedded server, the pool, migrations, tick partitions and read queries.

Used by ingestion (ticks, instruments), the OMS ledger and the db CLI; talks to PostgreSQL via asyncpg.
"""
