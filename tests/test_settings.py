"""One settings object, read from the environment."""

from __future__ import annotations

import pytest

from worker.settings import Settings, SettingsError, describe


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
    ],
)
def test_invalid_values_name_their_variable(name: str, value: str) -> None:
    with pytest.raises(SettingsError, match=name):
        Settings.from_env({name: value})


def test_every_setting_is_documented_in_the_readme() -> None:
    from pathlib import Path

    readme = (Path(__file__).parent.parent / "README.md").read_text()
    for variable, _default, _doc in describe():
        assert variable in readme, variable
