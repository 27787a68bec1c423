"""The HTTP stack's per-request cost: a bare ASGI app against this service's `/healthz`, each on
one uvicorn process, loaded by `wrk` at 32 connections.

Prints req/s and p50/p99 per round and the median of the rounds, for uvicorn's pure-Python stack
(asyncio + h11) and for `uvicorn[standard]` (uvloop + httptools):

    .venv/bin/python -m bench.http --duration 10 --rounds 3
    .venv/bin/python -m bench.http --target healthz --stack standard --path /api/v1/stats

Needs `wrk` (Debian: `apt-get install wrk`). Run from the repository's root. The service runs
with `ILLBRIDGE_SANDBOX=false`, no worker, on a fresh SQLite database. `--app-dir` serves
another checkout's code on the same interpreter, for a before/after in one sitting:

    mkdir /tmp/before && git archive d5ca106 | tar -x -C /tmp/before
    .venv/bin/python -m bench.http --target healthz --app-dir /tmp/before
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
from cryptography.fernet import Fernet

from tests.support.processes import ROOT, free_port

STACKS = {"plain": ("asyncio", "h11"), "standard": ("uvloop", "httptools")}

BARE_APP = """
async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    more = True
    while more:
        message = await receive()
        more = message.get("more_body", False)
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": b'{"status":"ok"}'})
"""

SERVICE_APP = """
from app.config import get_settings
from app.main import create_app
from app.observability import configure_logging
settings = get_settings()
configure_logging(settings.log_level)
app = create_app(settings)
"""

SERVE = """
import sys, uvicorn
namespace = {{}}
exec({source!r}, namespace)
uvicorn.run(namespace["app"], host="127.0.0.1", port={port}, loop={loop!r}, http={http!r},
            log_config=None, access_log=False)
"""


def start(
    target: str, stack: str, port: int, env: dict[str, str], app_dir: Path
) -> subprocess.Popen[bytes]:
    loop, http = STACKS[stack]
    source = BARE_APP if target == "bare" else SERVICE_APP
    code = SERVE.format(source=source, port=port, loop=loop, http=http)
    server = subprocess.Popen(
        [sys.executable, "-c", code],
        cwd=app_dir,
        env=env | {"PYTHONPATH": str(app_dir)},
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1)
            return server
        except httpx.HTTPError:
            time.sleep(0.2)
    server.kill()
    raise SystemExit(f"{target} on {stack} did not start")


_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 6e4}


def _ms(text: str) -> float:
    number, unit = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text).groups()  # type: ignore[union-attr]
    return float(number) * _UNITS[unit]


def wrk(url: str, connections: int, duration: int) -> tuple[float, float, float, int]:
    """req/s, p50 ms, p99 ms and non-2xx count of one wrk run."""
    out = subprocess.run(
        ["wrk", "-t2", f"-c{connections}", f"-d{duration}s", "--latency", url],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    if "Latency Distribution" not in out:
        raise SystemExit(f"wrk gave no latencies:\n{out}")
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    p50 = _ms(re.search(r"^\s*50%\s+(\S+)", out, re.M).group(1))  # type: ignore[union-attr]
    p99 = _ms(re.search(r"^\s*99%\s+(\S+)", out, re.M).group(1))  # type: ignore[union-attr]
    bad = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    return rps, p50, p99, int(bad.group(1)) if bad else 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", choices=["bare", "healthz", "both"], default="both")
    parser.add_argument("--stack", choices=[*STACKS, "both"], default="both")
    parser.add_argument("--path", default="/healthz")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--duration", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--app-dir",
        type=Path,
        default=ROOT,
        help="serve the `app` package of another checkout (e.g. `git archive` of an older commit)",
    )
    args = parser.parse_args()
    targets = ["bare", "healthz"] if args.target == "both" else [args.target]
    stacks = list(STACKS) if args.stack == "both" else [args.stack]
    with tempfile.TemporaryDirectory() as tmp:
        env = {key: value for key, value in os.environ.items() if not key.startswith("ILLBRIDGE_")}
        env |= {
            "ILLBRIDGE_DATABASE_URL": f"sqlite:///{Path(tmp) / 'bench.db'}",
            "ILLBRIDGE_SECRET_KEY": Fernet.generate_key().decode(),
            "ILLBRIDGE_SANDBOX": "false",
            "ILLBRIDGE_LOG_LEVEL": "WARNING",
        }
        subprocess.run(
            [sys.executable, "-m", "app.cli", "migrate"],
            cwd=args.app_dir,
            env=env | {"PYTHONPATH": str(args.app_dir)},
            check=True,
        )
        print(f"wrk -t2 -c{args.connections} -d{args.duration}s, {os.cpu_count()} cores")
        print(f"{'target':<10}{'stack':<10}{'req/s':>10}{'p50 ms':>9}{'p99 ms':>9}{'non-2xx':>9}")
        for target in targets:
            for stack in stacks:
                port = free_port()
                server = start(target, stack, port, env, args.app_dir)
                try:
                    url = f"http://127.0.0.1:{port}{args.path}"
                    wrk(url, args.connections, 2)  # warm-up
                    runs = [wrk(url, args.connections, args.duration) for _ in range(args.rounds)]
                finally:
                    server.terminate()
                    server.wait(10)
                for rps, p50, p99, bad in runs:
                    print(f"{target:<10}{stack:<10}{rps:>10.0f}{p50:>9.2f}{p99:>9.2f}{bad:>9}")
                median = [statistics.median(column) for column in zip(*runs, strict=True)]
                print(
                    f"{target:<10}{stack:<10}{median[0]:>10.0f}{median[1]:>9.2f}"
                    f"{median[2]:>9.2f}{int(median[3]):>9}  median"
                )


if __name__ == "__main__":
    main()
