"""The JND study: protocol engine, judgement records, screening, simulated observers and labels.

See ``jndplug/study/README.md``. Public API:

* engine: :class:`Session`, :class:`BinarySearch`, :class:`Trial`, :class:`ProtocolError`
* records: :class:`Judgement`, :func:`read_judgements`, :func:`write_judgements`, :func:`import_judgements`
* screening and labels: :func:`bt500_screen`, :func:`aggregate`, :func:`write_outputs`,
  :func:`load_labels`, :func:`level_for_sur`
* simulated observers: :func:`simulate`; visibility models: :func:`make_model`, :func:`detection_probability`
"""

from jndplug.data.layout import JNDDataset
from jndplug.study.engine import N_LEVELS, BinarySearch, ProtocolError, Session, Trial
from jndplug.study.labels import aggregate, level_for_sur, load_labels, write_outputs
from jndplug.study.observers import simulate
from jndplug.study.records import Judgement, import_judgements, read_judgements, write_judgements
from jndplug.study.screening import bt500_screen, participant_jnds
from jndplug.study.visibility import detection_probability, make_model

__all__ = [
    "N_LEVELS", "BinarySearch", "Judgement", "ProtocolError", "Session", "JNDDataset", "Trial",
    "aggregate", "bt500_screen", "detection_probability", "import_judgements", "level_for_sur",
    "load_labels", "make_model", "participant_jnds", "read_judgements", "simulate", "write_judgements",
    "write_outputs",
]
