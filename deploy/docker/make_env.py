"""Write the ``.env`` file compose.yaml reads: fresh random tokens and passwords, once.

Usage: ``python deploy/docker/make_env.py [PATH]`` (default ``.env`` beside compose.yaml). The
file is created readable by its owner only and never overwritten: delete it to rotate every
secret at once (then ``docker compose up -d`` again; PostgreSQL keeps the password its volume
was created with, so rotate that one with ``ALTER ROLE`` too). Never commit it: .gitignore
leaves it out. Tokens are 43 URL-safe characters, far past the 12 ``celeris serve`` requires.
"""

from __future__ import annotations

import os
import secrets
import sys
from pathlib import Path

VARIABLES = (
    "CELERIS_ADMIN_TOKEN",
    "CELERIS_PUBLISH_TOKEN",
    "CELERIS_PG_PASSWORD",
    "GRAFANA_ADMIN_PASSWORD",
)


def main(argv: list[str]) -> int:
    path = Path(argv[0]) if argv else Path(__file__).resolve().parents[2] / ".env"
    lines = [f"{name}={secrets.token_urlsafe(32)}\n" for name in VARIABLES]
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        print(f"make_env: {path} exists; delete it to generate new secrets", file=sys.stderr)
        return 2
    with os.fdopen(fd, "w") as out:
        out.writelines(lines)
    print(f"wrote {', '.join(VARIABLES)} to {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
