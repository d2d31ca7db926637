# Webhook secrets are stored encrypted with FIREFLY_SECRETS_KEY (webhooks/crypto.py), and a
# rotation keeps the previous secret for a grace period. Existing rows are encrypted here;
# going back decrypts them (and forgets previous secrets).

from django.db import migrations, models

import webhooks.models
from webhooks import crypto


def encrypt_rows(apps, schema_editor):
    Webhook = apps.get_model("webhooks", "Webhook")
    rows = Webhook.objects.using(schema_editor.connection.alias)
    for pk, plaintext in rows.values_list("pk", "secret_encrypted"):
        rows.filter(pk=pk).update(secret_encrypted=crypto.encrypt(plaintext))


def decrypt_rows(apps, schema_editor):
    Webhook = apps.get_model("webhooks", "Webhook")
    rows = Webhook.objects.using(schema_editor.connection.alias)
    for pk, token in rows.values_list("pk", "secret_encrypted"):
        rows.filter(pk=pk).update(secret_encrypted=crypto.decrypt(token)[:128])


class Migration(migrations.Migration):

    dependencies = [
        ("webhooks", "0001_initial"),
    ]

    operations = [
        migrations.RenameField(
            model_name="webhook",
            old_name="secret",
            new_name="secret_encrypted",
        ),
        migrations.AlterField(
            model_name="webhook",
            name="secret_encrypted",
            field=models.TextField(default=webhooks.models.new_encrypted_secret, editable=False),
        ),
        migrations.AddField(
            model_name="webhook",
            name="previous_secret_encrypted",
            field=models.TextField(blank=True, default="", editable=False),
        ),
        migrations.AddField(
            model_name="webhook",
            name="previous_secret_until",
            field=models.DateTimeField(blank=True, editable=False, null=True),
        ),
        migrations.RunPython(encrypt_rows, decrypt_rows, elidable=False),
    ]
