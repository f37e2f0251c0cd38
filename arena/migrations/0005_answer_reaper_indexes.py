from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("arena", "0004_rag"),
    ]

    operations = [
        migrations.AddIndex(
            model_name="answer",
            index=models.Index(
                condition=models.Q(("status", "streaming"), ("superseded", False)),
                fields=["heartbeat_at"],
                name="answer_streaming_heartbeat",
            ),
        ),
        migrations.AddIndex(
            model_name="answer",
            index=models.Index(
                condition=models.Q(("status", "pending"), ("superseded", False)),
                fields=["created_at"],
                name="answer_pending_created",
            ),
        ),
    ]
