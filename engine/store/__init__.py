"""berth's event store: an append-only log with a projected read model.

The modules are split by concern (schema, mapper, recorder and its SQLite and
PostgreSQL dialects, reader, read model, time travel; the audit modules live in
``engine.audit``). Nothing is re-exported here: importing the table definitions
(``engine.store.schema``, which the audit modules need) must not pull in the
recorder, which itself needs the audit modules.
"""
