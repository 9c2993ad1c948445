"""The exceptions fedcrm raises on purpose, in one place.

Every error a user can cause derives from :class:`FedcrmError`; the CLI turns those into a
one-line message and a non-zero exit code. Anything else is a bug and keeps its traceback.
Run-time warnings about a weaker privacy guarantee use :class:`PrivacyWarning`, so that they can
be filtered, escalated to errors or asserted on as one category.

Tree::

    FedcrmError
    ├── ConfigError              a run configuration or command-line value is invalid
    ├── DataError                a store's files break the data contract
    │   └── DataValidationError  ... with the list of findings (file, row, field)
    ├── ImportMappingError       `fedcrm import` cannot map the source file
    ├── OutputExistsError        refusing to overwrite an existing output
    └── PrivacyError             the privacy boundary refused to let data through
        ├── BudgetExceededError  the privacy ledger refuses a spend beyond the store's budget
        ├── ConsentError         consent ledger cannot decide / purpose unknown
        └── DeidentificationError a column is not covered by the de-identification policy

    UserWarning
    └── PrivacyWarning           a weaker privacy guarantee is in effect (linkage on, a
                                 key file readable by others, a quasi-identifier kept)

Messages never carry personal data: they name files, rows, fields and counts, not values of
identifying columns.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from fedcrm.data.findings import Finding

__all__ = [
    "BudgetExceededError",
    "ConfigError",
    "ConsentError",
    "DataError",
    "DataValidationError",
    "DeidentificationError",
    "FedcrmError",
    "ImportMappingError",
    "OutputExistsError",
    "PrivacyError",
    "PrivacyWarning",
]


class FedcrmError(Exception):
    """Base class of every error a user can cause."""


class ConfigError(FedcrmError):
    """A configuration file or command-line value is invalid."""


class DataError(FedcrmError):
    """A store's data cannot be read as the data contract requires."""


class DataValidationError(DataError):
    """A store's data breaks the contract; ``findings`` lists every error found."""

    def __init__(self, findings: Sequence[Finding], summary: str | None = None) -> None:
        self.findings = list(findings)
        errors = [f for f in self.findings if f.is_error]
        first = errors[0].describe() if errors else "no details"
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        super().__init__(summary or f"{first}{more}")


class ImportMappingError(FedcrmError):
    """The source file of `fedcrm import` cannot be mapped onto the data contract."""


class OutputExistsError(FedcrmError):
    """An output path exists and overwriting was not requested."""


class PrivacyError(FedcrmError):
    """The privacy boundary refused to let data through."""


class ConsentError(PrivacyError):
    """The consent ledger cannot decide (unknown purpose, malformed ledger)."""


class DeidentificationError(PrivacyError):
    """De-identification refused: a column is not covered by the policy (fail closed)."""


class PrivacyWarning(UserWarning):
    """A run proceeds with a weaker privacy guarantee than the default (see the message).

    Issued with :func:`warnings.warn`, never raised: federation linkage switched on, a key file
    readable by other users, a de-identification policy that keeps a quasi-identifier as it is.
    """


class BudgetExceededError(PrivacyError):
    """The privacy ledger refused a spend: the purpose's share or the lifetime ε would be exceeded.

    The message says what was requested, what remains and the difference (never data values).
    """
