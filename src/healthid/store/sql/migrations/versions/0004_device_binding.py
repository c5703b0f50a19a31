"""the enclave's device binding

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-28 22:40:00.000000
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Devices bound before have none and cannot log in until re-enrolled (recovery): the
    # enclave no longer takes the host's word for whose device it is.
    op.add_column("devices", sa.Column("binding", sa.LargeBinary(length=32), nullable=True))


def downgrade() -> None:
    op.drop_column("devices", "binding")
