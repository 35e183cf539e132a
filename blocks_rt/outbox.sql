-- The transactional outbox of blocks-rt (`blocks-rt outbox init`; safe to run again).
-- A backend inserts (event, data) in the same transaction as its business change; the other columns are the
-- consumer's bookkeeping.
CREATE TABLE IF NOT EXISTS blocks_rt_outbox (
    id           bigserial PRIMARY KEY,
    event        text NOT NULL,               -- a domain event name, as in the publish API
    data         jsonb NOT NULL,              -- its payload
    created_at   timestamptz NOT NULL DEFAULT now(),
    seq          bigint,                      -- commit order: given when the inserting transaction commits
    batch        text,                        -- the consumer batch holding the row until it is done
    processed_at timestamptz,                 -- delivered (pruned after the retention)
    dead_at      timestamptz,                 -- set aside: it can never be published
    error        text                         -- why
);
CREATE SEQUENCE IF NOT EXISTS blocks_rt_outbox_seq;
CREATE INDEX IF NOT EXISTS blocks_rt_outbox_pending ON blocks_rt_outbox (seq, id)
    WHERE processed_at IS NULL AND dead_at IS NULL;
CREATE INDEX IF NOT EXISTS blocks_rt_outbox_processed ON blocks_rt_outbox (processed_at)
    WHERE processed_at IS NOT NULL;
CREATE INDEX IF NOT EXISTS blocks_rt_outbox_dead ON blocks_rt_outbox (dead_at) WHERE dead_at IS NOT NULL;

-- Ids are taken at insert, not at commit: a transaction holding id 7 may commit after the one holding id 8.
-- This trigger runs at commit (deferred) and numbers the row then, so `seq` follows commit order for
-- transactions that touched the same business rows (the later one waited for the earlier one's locks), and
-- wakes the consumer (NOTIFY is delivered at commit, never for a rolled-back transaction).
CREATE OR REPLACE FUNCTION blocks_rt_outbox_committed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE blocks_rt_outbox SET seq = nextval('blocks_rt_outbox_seq') WHERE id = NEW.id;
    PERFORM pg_notify('blocks_rt_outbox', '');
    RETURN NULL;
END $$;

DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_trigger WHERE tgname = 'blocks_rt_outbox_committed'
                   AND tgrelid = 'blocks_rt_outbox'::regclass) THEN
        CREATE CONSTRAINT TRIGGER blocks_rt_outbox_committed AFTER INSERT ON blocks_rt_outbox
            DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION blocks_rt_outbox_committed();
    END IF;
END $$;
