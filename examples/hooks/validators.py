"""The `validators` module of the guide's complete hooks example: verify_qcow2(disk)."""

from migration_validators import verify_qcow2  # noqa: F401  (re-exported for the hook)
