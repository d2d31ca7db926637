"""On PostgreSQL, row-level security on the tenant tables and the role that is held to it
(orgs/rls.py; docs/security.md, "Row-level security"). Nothing on SQLite."""

from django.db import migrations

ROLE = "firefly_tenant"  # orgs.rls.ROLE

# Every table whose rows belong to one organization (an `organization_id` column).
TENANT_TABLES = [
    "pipelines_pipeline",
    "pipelines_pipelineversion",
    "pipelines_run",
    "pipelines_steprun",
    "pipelines_checkpoint",
    "pipelines_auditentry",
    "pipelines_handoffenvelope",
    "approvals_humantask",
    "approvals_decision",
    "approvals_webhook",
    "approvals_webhookdelivery",
    "tokens_apitoken",
]

# The organization the session acts in; NULL when none was chosen: Firefly itself
# (migrations, commands, sweeps, the reaper, authentication before the tenant is known).
FUNCTION = """
CREATE OR REPLACE FUNCTION firefly_organization() RETURNS bigint
LANGUAGE sql STABLE AS $$
    SELECT nullif(current_setting('firefly.organization', true), '')::bigint
$$;
"""

# USING also checks rows written (no WITH CHECK given): an INSERT or UPDATE that would
# put a row in another organization is refused.
POLICY = """
ALTER TABLE {table} ENABLE ROW LEVEL SECURITY;
ALTER TABLE {table} FORCE ROW LEVEL SECURITY;
CREATE POLICY firefly_tenant ON {table}
    USING (firefly_organization() IS NULL OR organization_id = firefly_organization());
"""

# A grant has no organization of its own: it belongs to its pipeline's.
GRANT_POLICY = """
ALTER TABLE pipelines_pipelinegrant ENABLE ROW LEVEL SECURITY;
ALTER TABLE pipelines_pipelinegrant FORCE ROW LEVEL SECURITY;
CREATE POLICY firefly_tenant ON pipelines_pipelinegrant
    USING (firefly_organization() IS NULL OR pipeline_id IN (
        SELECT id FROM pipelines_pipeline WHERE organization_id = firefly_organization()
    ));
"""

# The role requests and tasks switch to (SET ROLE), so that the policies hold even when
# Firefly logs in as a superuser or as the tables' owner. It may read and write the
# application's tables, today's and those later migrations create, and nothing else.
# Roles belong to the whole server: several databases share it. A login role that may not
# create roles gets a notice instead, and the policies then hold only if that login role
# is itself subject to them (docs/security.md).
ROLE_SQL = f"""
DO $$
BEGIN
    BEGIN
        IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{ROLE}') THEN
            CREATE ROLE {ROLE} NOLOGIN NOBYPASSRLS;
        END IF;
    EXCEPTION
        WHEN duplicate_object THEN NULL;  -- another database's migration made it meanwhile
        WHEN insufficient_privilege THEN
            RAISE NOTICE 'Firefly: % may not create the role {ROLE}; see docs/security.md',
                current_user;
            RETURN;
    END;
    BEGIN
        EXECUTE format('GRANT {ROLE} TO %I', current_user);
    EXCEPTION WHEN insufficient_privilege THEN
        RAISE NOTICE 'Firefly: % may not be granted the role {ROLE}; see docs/security.md',
            current_user;
        RETURN;
    END;
    EXECUTE format(
        'GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA %I TO {ROLE}',
        current_schema()
    );
    EXECUTE format('GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA %I TO {ROLE}', current_schema());
    EXECUTE format(
        'ALTER DEFAULT PRIVILEGES IN SCHEMA %I GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO {ROLE}',
        current_schema()
    );
    EXECUTE format(
        'ALTER DEFAULT PRIVILEGES IN SCHEMA %I GRANT USAGE, SELECT ON SEQUENCES TO {ROLE}',
        current_schema()
    );
END
$$;
"""

UNDO_ROLE_SQL = f"""
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{ROLE}')
       AND pg_has_role(current_user, '{ROLE}', 'MEMBER') THEN
        EXECUTE format(
            'ALTER DEFAULT PRIVILEGES IN SCHEMA %I REVOKE ALL ON TABLES FROM {ROLE}',
            current_schema()
        );
        EXECUTE format(
            'ALTER DEFAULT PRIVILEGES IN SCHEMA %I REVOKE ALL ON SEQUENCES FROM {ROLE}',
            current_schema()
        );
        EXECUTE format('REVOKE ALL ON ALL TABLES IN SCHEMA %I FROM {ROLE}', current_schema());
        EXECUTE format('REVOKE ALL ON ALL SEQUENCES IN SCHEMA %I FROM {ROLE}', current_schema());
    END IF;
END
$$;
"""


def install(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    schema_editor.execute(FUNCTION, params=None)
    for table in TENANT_TABLES:
        schema_editor.execute(POLICY.format(table=table), params=None)
    schema_editor.execute(GRANT_POLICY, params=None)
    schema_editor.execute(ROLE_SQL, params=None)


def uninstall(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    # The role stays: other databases of the server may use it.
    schema_editor.execute(UNDO_ROLE_SQL, params=None)
    for table in [*TENANT_TABLES, "pipelines_pipelinegrant"]:
        schema_editor.execute(
            f"DROP POLICY IF EXISTS firefly_tenant ON {table};"
            f" ALTER TABLE {table} NO FORCE ROW LEVEL SECURITY;"
            f" ALTER TABLE {table} DISABLE ROW LEVEL SECURITY;",
            params=None,
        )
    schema_editor.execute("DROP FUNCTION IF EXISTS firefly_organization();", params=None)


class Migration(migrations.Migration):
    dependencies = [
        ("orgs", "0002_default_organization"),
        ("pipelines", "0011_organization_required"),
        ("approvals", "0008_organization_required"),
        ("webhooks", "0005_organization_required"),
        ("tokens", "0005_organization_required"),
    ]

    operations = [migrations.RunPython(install, uninstall)]
