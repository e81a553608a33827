"""The README's metric table is read as patterns (the loop run checks its metrics file against them:
tests/recipe/test_domain_grpo_loop_on_cpu.py)."""

from readme_metrics import missing_readme_metrics, readme_metric_patterns


def test_the_table_names_every_metric_family():
    names = set(readme_metric_patterns())
    assert {"actor/domain_loss", "actor/domain_divergence_token_mean", "domain/js_mean", "domain/js_max"} <= names
    assert "domain/transform_count/<name>" in names and "val-domain/<data_source>/js/<T>" in names


def test_a_placeholder_matches_one_path_segment_and_a_missing_metric_is_reported():
    patterns = readme_metric_patterns()
    assert patterns["domain/transform_count/<name>"].match("domain/transform_count/rot90")
    assert not patterns["domain/transform_count/<name>"].match("domain/transform_count/a/b")
    keys = [name.replace("<data_source>", "s2").replace("<view>", "rot90").replace("<T>", "rot90") for name in patterns]
    keys = [key.replace("<name>", "rot90") for key in keys]
    assert missing_readme_metrics(keys) == []
    assert missing_readme_metrics([k for k in keys if k != "actor/domain_divergence_token_mean"]) == [
        "actor/domain_divergence_token_mean"
    ]
