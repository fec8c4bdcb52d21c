ALTER TABLE lifecycle ADD COLUMN tenant text NOT NULL DEFAULT '';
ALTER TABLE lifecycle ADD COLUMN pending boolean NOT NULL DEFAULT false;
ALTER TABLE lifecycle ADD COLUMN id bigserial;
UPDATE lifecycle l SET tenant = COALESCE(i.tenant, '') FROM invocations i
    WHERE l.invocation_id <> '' AND i.invocation_id = l.invocation_id;
UPDATE lifecycle l SET tenant = COALESCE(i.tenant, '') FROM invocations i
    WHERE l.invocation_id = '' AND i.build_id = l.build_id;
UPDATE lifecycle l SET pending = true WHERE NOT EXISTS (
    SELECT 1 FROM invocations i
    WHERE (l.invocation_id <> '' AND i.invocation_id = l.invocation_id)
       OR (l.invocation_id = '' AND i.build_id = l.build_id));
ALTER TABLE lifecycle DROP CONSTRAINT lifecycle_pkey;
DELETE FROM lifecycle a USING lifecycle b
    WHERE a.id > b.id AND a.tenant = b.tenant AND a.kind = b.kind
    AND ((a.invocation_id <> '' AND a.invocation_id = b.invocation_id)
      OR (a.invocation_id = '' AND b.invocation_id = '' AND a.build_id = b.build_id));
CREATE UNIQUE INDEX lifecycle_inv ON lifecycle (invocation_id, tenant, kind)
    WHERE invocation_id <> '';
CREATE UNIQUE INDEX lifecycle_build ON lifecycle (build_id, tenant, kind)
    WHERE invocation_id = '';
CREATE INDEX lifecycle_pending ON lifecycle (tenant, id) WHERE pending;
