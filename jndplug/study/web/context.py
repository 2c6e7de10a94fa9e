"""What the web study's blueprints share: the one study an application serves."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from flask import current_app

from jndplug.data.layout import JNDDataset
from jndplug.study.web.store import StudyStore

if TYPE_CHECKING:
    from jndplug.study.web.app import StudySettings

WILDCARD_HOSTS = ("", "0.0.0.0", "::")
_KEY = "jndplug_study"


@dataclass(frozen=True)
class Study:
    dataset: JNDDataset
    store: StudyStore
    settings: StudySettings
    images: list[str]  # the images participants judge, in order
    training: list[tuple[str, int]]  # (image, level) of each training trial
    token: str  # the operator's
    export_path: Path
    host: str  # the address the server answers for, and the one its links are made from
    base_url: str

    @property
    def participant_cookie(self) -> str:
        return f"jndplug_p_{self.store.study_id}"

    @property
    def operator_cookie(self) -> str:
        return f"jndplug_op_{self.store.study_id}"

    def install(self, app) -> None:
        app.extensions[_KEY] = self


def study() -> Study:
    """The study of the application handling the current request."""
    return current_app.extensions[_KEY]
