"""Schedules and their firings join the tenant tables under row-level security (PostgreSQL
only; orgs/migrations/0003_row_level_security.py made the function and the role)."""

from django.db import migrations

from orgs.policies import tenant_policy


class Migration(migrations.Migration):
    dependencies = [("schedules", "0001_initial"), ("orgs", "0004_outbox_row_level_security")]

    operations = [tenant_policy("schedules_schedule", "schedules_firing")]
