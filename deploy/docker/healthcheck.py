"""Probe a Celeris endpoint from inside its container: exit 0 on HTTP 200, else 1 and one line.

The images have no curl (slim base): Docker's ``HEALTHCHECK`` runs this, and compose.yaml's
``live`` service runs it against the live loop's ``--metrics-port``. (Kubernetes probes are its
own HTTP probes.)

Usage: ``python healthcheck.py [PATH] [--port N] [--timeout S]``. ``PATH`` defaults to
``/healthz``; the port to ``$CELERIS_SERVE_PORT``, else 8000 (``celeris serve``'s default).
"""

from __future__ import annotations

import argparse
import os
import sys
import urllib.error
import urllib.request


def probe(path: str, port: int, timeout: float) -> str | None:
    """Return None when ``GET http://127.0.0.1:PORT/PATH`` answers 200, else why not."""
    url = f"http://127.0.0.1:{port}/{path.lstrip('/')}"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as answer:
            status = answer.status
    except urllib.error.HTTPError as exc:  # 503 from /readyz while models load
        body = exc.read(200).decode("utf-8", "replace").strip()
        return f"{url} answered {exc.code}: {body}"
    except (urllib.error.URLError, OSError) as exc:
        return f"{url} unreachable: {getattr(exc, 'reason', exc)}"
    return None if status == 200 else f"{url} answered {status}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("path", nargs="?", default="/healthz")
    parser.add_argument("--port", type=int, default=None)
    parser.add_argument("--timeout", type=float, default=2.0)
    args = parser.parse_args(argv)
    port = args.port
    if port is None:
        text = os.environ.get("CELERIS_SERVE_PORT", "8000")
        try:
            port = int(text)
        except ValueError:
            print(f"healthcheck: CELERIS_SERVE_PORT={text!r} is not a port", file=sys.stderr)
            return 2
    failure = probe(args.path, port, args.timeout)
    if failure is not None:
        print(f"healthcheck: {failure}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
