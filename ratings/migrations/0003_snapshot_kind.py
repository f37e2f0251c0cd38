from django.db import migrations, models


class Migration(migrations.Migration):
    """Snapshots record which board they are: the public one, or a filtered
    run. Earlier snapshots did not record their filter (a source- or
    flag-filtered run looked like the overall board), so they become
    "filtered" and the pages wait for the next refresh's board."""

    dependencies = [
        ("ratings", "0002_vote_prompt_dedup"),
    ]

    operations = [
        migrations.AddField(
            model_name="snapshot",
            name="kind",
            field=models.CharField(
                choices=[("board", "the public board"), ("filtered", "a filtered run")],
                default="filtered",
                max_length=10,
            ),
            preserve_default=False,
        ),
        migrations.AddField(
            model_name="snapshot",
            name="filter",
            field=models.JSONField(default=dict, help_text="The vote filter of a filtered run."),
        ),
        migrations.AlterField(
            model_name="snapshot",
            name="extra",
            field=models.JSONField(
                default=dict, help_text="Style coefficients, matrices, Elo trend."
            ),
        ),
        migrations.RemoveIndex(
            model_name="snapshot",
            name="ratings_sna_categor_f7bcb3_idx",
        ),
        migrations.AddIndex(
            model_name="snapshot",
            index=models.Index(
                fields=["kind", "category", "style_control", "ci", "dedup", "-created_at"],
                name="snapshot_board_latest",
            ),
        ),
    ]
