import hashlib
import hmac

import django.utils.timezone
from django.conf import settings
from django.db import migrations, models


def _visitor_key(secret: str, value: str) -> str:
    # A copy of arena.visitors.visitor_key as it was when this migration was
    # written: a migration must not change when that module does.
    key = hashlib.sha256(b"arena.visitors.key" + secret.encode()).digest()
    return hmac.new(key, b"visitor:" + value.encode(), hashlib.sha256).hexdigest()[:40]


def _stored_in_clear(value: str) -> bool:
    # "" (no visitor) and "import:<source>" (imported battles) identify no one.
    return bool(value) and not value.startswith("import:")


def _hash_keys(model: type[models.Model], secret: str) -> None:
    clear = model.objects.values_list("session_key", flat=True).distinct().iterator()
    for value in [v for v in clear if _stored_in_clear(v)]:
        model.objects.filter(session_key=value).update(session_key=_visitor_key(secret, value))


def hash_session_keys(apps, schema_editor) -> None:
    secret = settings.SECRET_KEY
    for app, name in (("arena", "Battle"), ("arena", "Vote"), ("ratings", "FlaggedVoter")):
        _hash_keys(apps.get_model(app, name), secret)


class Migration(migrations.Migration):
    dependencies = [
        ("arena", "0005_answer_reaper_indexes"),
        ("ratings", "0002_vote_prompt_dedup"),
    ]

    operations = [
        migrations.CreateModel(
            name="Visitor",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                ("key", models.CharField(max_length=64, unique=True)),
                ("created_at", models.DateTimeField(auto_now_add=True)),
                (
                    "last_seen_at",
                    models.DateTimeField(db_index=True, default=django.utils.timezone.now),
                ),
            ],
        ),
        migrations.AddField(
            model_name="battle",
            name="ip_key",
            field=models.CharField(blank=True, db_index=True, max_length=64),
        ),
        migrations.AddField(
            model_name="vote",
            name="ip_key",
            field=models.CharField(blank=True, db_index=True, max_length=64),
        ),
        # Session keys were stored in clear; keys already hashed cannot be told
        # apart, so this runs forward only.
        migrations.RunPython(hash_session_keys, migrations.RunPython.noop, elidable=True),
    ]
