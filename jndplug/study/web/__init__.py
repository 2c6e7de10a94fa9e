"""The JND study in a browser: ``jndplug study serve DATASET``.

A Flask application (:func:`create_app`) over the protocol engine of :mod:`jndplug.study.engine`,
storing every answer in SQLite (:class:`StudyStore`) the moment it is given, and exporting them as
study judgement records for ``jndplug study aggregate``. See ``jndplug/study/README.md``.
"""

from jndplug.study.web.app import StudySettings, create_app, open_study
from jndplug.study.web.operator import operator_summary
from jndplug.study.web.server import serve
from jndplug.study.web.store import StudyStore

__all__ = ["StudySettings", "StudyStore", "create_app", "open_study", "operator_summary", "serve"]
