"""The ``fedcrm`` command line: a thin edge over the library.

Domain errors (:class:`fedcrm.errors.FedcrmError`) become one-line messages and a non-zero
exit code here; nothing below this package prints.
"""

from fedcrm.cli import analytics_commands as _analytics_commands  # noqa: F401 - registers analytics
from fedcrm.cli import audit_commands as _audit_commands  # noqa: F401 - registers audit verify
from fedcrm.cli import data_commands as _data_commands  # noqa: F401 - registers generate/validate/import
from fedcrm.cli import erasure_commands as _erasure_commands  # noqa: F401 - registers erase
from fedcrm.cli import pipeline_commands as _pipeline_commands  # noqa: F401 - registers prepare/demo
from fedcrm.cli import pki_commands as _pki_commands  # noqa: F401 - registers pki init/check
from fedcrm.cli import realdata_commands as _realdata_commands  # noqa: F401 - completejourney
from fedcrm.cli import report_commands as _report_commands  # noqa: F401 - registers report
from fedcrm.cli import scoring_commands as _scoring_commands  # noqa: F401 - registers score
from fedcrm.cli import training_commands as _training_commands  # noqa: F401 - registers train
from fedcrm.cli.app import app, main

__all__ = ["app", "main"]
