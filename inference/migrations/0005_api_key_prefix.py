# API keys only from variables under ARENA_KEY_PREFIX (inference.models.validate_api_key_env).

from django.db import migrations, models

import inference.models


class Migration(migrations.Migration):
    dependencies = [
        ("inference", "0004_ingest_jobs"),
    ]

    operations = [
        migrations.AlterField(
            model_name="endpoint",
            name="api_key_env",
            field=models.CharField(
                blank=True,
                help_text="Name of the environment variable that holds the API key (the key itself is never stored), under ARENA_KEY_PREFIX (default ARENA_KEY_), e.g. ARENA_KEY_VLLM. Empty: no key.",
                max_length=100,
                validators=[inference.models.validate_api_key_env],
                verbose_name="API key variable",
            ),
        ),
    ]
