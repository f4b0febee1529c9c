-- One commit, one round trip. PostgresStore.commit used to run BEGIN, lock
-- the heads, insert the ops, COMMIT, and its pool's reset: five round trips
-- (six fenced) from the event loop to a backend per group commit. This
-- function does the same steps in the same order, called as one statement in
-- its own implicit transaction; an error anywhere rolls all of it back.
--
-- 1. With a fence (p_fence_docs not null): share-lock those documents' lease
--    rows, in document order, and raise TD001 unless every epoch is the
--    current one. DETAIL holds the epochs found ({"docs": [...], "values":
--    [...]}): the store names the stale documents from it (storage/leases.py).
-- 2. Lock every document's head row, creating missing ones, in document order
--    (INSERT ... ON CONFLICT DO UPDATE: a second writer blocks here until the
--    first commits, then reads the new head), and raise TD002 unless each
--    run starts right after its head; DETAIL holds the heads, from which the
--    store raises the same ConflictError as every backend (storage/batch.py).
-- 3. Insert the ops and advance the heads. The (doc, version) primary key and
--    the ops_client_seq index still refuse a gap or a duplicate.
CREATE FUNCTION tandem_commit(
    p_docs text[], p_first bigint[], p_last bigint[], p_updated double precision[],
    p_since double precision, p_fence_docs text[], p_fence_epochs bigint[],
    p_op_doc text[], p_version bigint[], p_op json[], p_client_id text[], p_seq bigint[],
    p_user text[], p_time double precision[], p_crdt bytea[]
) RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    found_docs text[];
    found_values bigint[];
BEGIN
    IF p_fence_docs IS NOT NULL THEN
        SELECT array_agg(doc), array_agg(epoch) INTO found_docs, found_values
        FROM (
            SELECT doc, epoch FROM document_leases
            WHERE doc = ANY(p_fence_docs) ORDER BY doc FOR SHARE
        ) AS held;
        IF EXISTS (
            SELECT 1 FROM unnest(p_fence_docs, p_fence_epochs) AS f(doc, epoch)
            WHERE f.epoch IS DISTINCT FROM (
                SELECT h.epoch FROM unnest(found_docs, found_values) AS h(doc, epoch)
                WHERE h.doc = f.doc
            )
        ) THEN
            RAISE EXCEPTION 'stale lease epoch' USING ERRCODE = 'TD001',
                DETAIL = json_build_object('docs', found_docs, 'values', found_values)::text;
        END IF;
    END IF;

    WITH locked AS (
        INSERT INTO documents (doc, head, updated)
        SELECT doc, 0, p_since FROM unnest(p_docs) AS doc ORDER BY doc
        ON CONFLICT (doc) DO UPDATE SET head = documents.head
        RETURNING doc, head
    )
    SELECT array_agg(doc), array_agg(head) INTO found_docs, found_values FROM locked;
    IF EXISTS (
        SELECT 1 FROM unnest(p_docs, p_first) AS r(doc, first_version)
        JOIN unnest(found_docs, found_values) AS h(doc, head) ON h.doc = r.doc
        WHERE r.first_version <> h.head + 1
    ) THEN
        RAISE EXCEPTION 'batch does not continue the log' USING ERRCODE = 'TD002',
            DETAIL = json_build_object('docs', found_docs, 'values', found_values)::text;
    END IF;

    INSERT INTO ops (doc, version, op, client_id, seq, "user", time, crdt)
    SELECT * FROM unnest(
        p_op_doc, p_version, p_op, p_client_id, p_seq, p_user, p_time, p_crdt
    );
    UPDATE documents AS d SET head = u.head, updated = u.updated
    FROM unnest(p_docs, p_last, p_updated) AS u(doc, head, updated)
    WHERE d.doc = u.doc;
END
$$;
