"""One settings object, read from the environment: every value has a range, and a value
outside it stops the service at once with one line that names the variable."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import pytest

from worker.settings import Settings, SettingsError, describe, markdown_table

README = Path(__file__).parent.parent / "README.md"


def test_defaults_need_no_environment() -> None:
    settings = Settings.from_env({})
    assert settings.want == "all" and settings.max_pixels > 12_000_000


def test_variables_are_parsed_by_type() -> None:
    settings = Settings.from_env({"QRW_MAX_PIXELS": "1_000_000", "QRW_WANT": "first"})
    assert settings.max_pixels == 1_000_000 and settings.want == "first"


def test_blank_variables_mean_the_default() -> None:
    assert Settings.from_env({"QRW_PDF_DPI": " "}).pdf_dpi == Settings().pdf_dpi


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("QRW_MAX_PIXELS", "many"),
        ("QRW_MAX_PIXELS", "0"),
        ("QRW_WANT", "some"),
        ("QRW_DEADLINE_MS", "-1"),
        # Reproduced in issue 9: each of these was accepted and then failed in production.
        ("QRW_QUEUES", " , "),  # the pool crash-looped, 24 restarts in 25 s
        ("QRW_JOB_TIMEOUT", "99999999999"),  # every job killed its worker
        ("QRW_LOG_LEVEL", "loud"),
        ("REDIS_URL", "http://127.0.0.1:6379/0"),
        ("REDIS_URL", "redis://127.0.0.1:port/0"),
        ("REDIS_URL", "redis://127.0.0.1:6379/zero"),
        ("REDIS_URL", "localhost:6379"),
        ("QRW_FILE_ROOTS", "relative/folder"),
        ("QRW_FILE_ROOTS", "/no/such/folder/anywhere"),
        ("QRW_FILE_ROOTS", "/"),
        ("QRW_S3_BUCKETS", "*"),
        ("QRW_S3_BUCKETS", "invoices/*"),
        ("QRW_S3_BUCKETS", "/in/"),
        ("QRW_S3_BUCKETS", "Invoices_2024"),
        ("QRW_S3_BUCKETS", "in"),
        ("QRW_S3_BUCKETS", "invoices//in/"),
        ("QRW_S3_BUCKETS", "invoices/../other/"),
        ("QRW_PDF_DPI", "100000"),
        # Queue names become Redis keys: rq:queue:<name>.
        ("QRW_QUEUES", "qr,has space"),
        ("QRW_QUEUES", "qr:x"),
        ("QRW_QUEUES", "qr,qr"),
        ("QRW_DETECTOR_MODELS", ","),
        ("QRW_DETECTOR_MODELS", "small,small"),
        ("QRW_DETECTOR_THRESHOLD", "nan"),
        ("QRW_HTTP_BODY_TIMEOUT", "inf"),
        ("QRW_HTTP_BODY_TIMEOUT", "0"),
        ("QRW_HTTP_MIN_BODY_RATE", "-1"),
        ("QRW_HTTP_SLOT_WAIT_MS", "-1"),
        ("QRW_MAX_DOCUMENT_PIXELS", "0"),
        ("QRW_MAX_JOB_BYTES", "0"),
        ("QRW_HTTP_HOST", "has space"),
        ("QRW_METRICS_PORT", "65536"),
        ("QRW_MAX_PAGES", "٣"),  # int() takes Arabic-Indic digits; a setting does not
        ("QRW_MAX_PAGES", "9" * 5000),
        ("QRW_READY_NEEDS_REDIS", "maybe"),
    ],
)
def test_a_value_that_cannot_work_is_refused_in_one_line_naming_its_variable(
    name: str, value: str
) -> None:
    with pytest.raises(SettingsError, match=name) as caught:
        Settings.from_env({name: value})
    message = str(caught.value)
    assert "\n" not in message and len(message) < 300, message


def test_every_setting_has_a_range_in_its_metadata() -> None:
    for field in dataclasses.fields(Settings):
        assert field.metadata["range"].text, field.name


def _numeric_fields() -> list[tuple[str, str, float, float]]:
    rows = []
    for field in dataclasses.fields(Settings):
        rule = field.metadata["range"]
        if rule.low is not None:
            rows.append((field.name, field.metadata["env"], rule.low, rule.high))
    return rows


@pytest.mark.parametrize(("name", "variable", "low", "high"), _numeric_fields())
def test_numbers_are_accepted_at_their_bounds_and_refused_past_them(
    name: str, variable: str, low: float, high: float
) -> None:
    for bound in (low, high):
        assert getattr(Settings.from_env({variable: str(bound)}), name) == bound
    step = 1 if isinstance(low, int) else max(abs(high) * 1e-6, 1e-9)
    for outside in (low - step, high + step):
        with pytest.raises(SettingsError, match=variable):
            Settings.from_env({variable: str(outside)})


def test_settings_built_in_code_are_checked_like_the_environment() -> None:
    with pytest.raises(SettingsError, match="QRW_JOB_TIMEOUT"):
        Settings(job_timeout=99_999_999_999)
    with pytest.raises(SettingsError, match="QRW_QUEUES"):
        Settings(queues=())
    with pytest.raises(SettingsError, match="QRW_MAX_BYTES"):
        Settings(max_bytes=True)  # type: ignore[arg-type]
    with pytest.raises(SettingsError, match="QRW_DETECTOR_THRESHOLD"):
        Settings(detector_threshold=math.nan)


def test_a_bucket_folder_is_normalised_to_a_whole_segment_prefix() -> None:
    settings = Settings.from_env({"QRW_S3_BUCKETS": "invoices/in, archive/2024/,scans/"})
    assert settings.s3_buckets == ("invoices/in/", "archive/2024/", "scans")


def test_file_roots_are_absolute_existing_folders(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    settings = Settings.from_env({"QRW_FILE_ROOTS": f"{tmp_path}/a/:{tmp_path}"})
    assert settings.file_roots == (str(tmp_path / "a"), str(tmp_path))


def test_the_log_level_is_one_of_the_known_levels_in_any_case() -> None:
    assert Settings.from_env({"QRW_LOG_LEVEL": "WARNING"}).log_level == "warning"


@pytest.mark.parametrize(
    "url", ["redis://127.0.0.1:6379/0", "rediss://cache.internal:6380", "unix:///run/redis.sock"]
)
def test_redis_urls_follow_redis_py_rules(url: str) -> None:
    assert Settings.from_env({"REDIS_URL": url}).redis_url == url


def test_every_setting_is_documented_in_the_readme() -> None:
    readme = README.read_text()
    for variable, _default, _doc in describe():
        assert variable in readme, variable


def test_the_readme_configuration_table_is_generated_from_the_settings() -> None:
    # Regenerate with: python -m worker.settings
    assert markdown_table() in README.read_text()
