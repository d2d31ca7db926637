"""The inbound hook tables join the tenant tables under row-level security (PostgreSQL
only; orgs/migrations/0003_row_level_security.py made the function and the role)."""

from django.db import migrations

from orgs.policies import tenant_policy


class Migration(migrations.Migration):
    dependencies = [("inbound", "0001_inbound_hooks"), ("orgs", "0004_outbox_row_level_security")]

    operations = [tenant_policy("inbound_inboundhook", "inbound_inbounddelivery")]
