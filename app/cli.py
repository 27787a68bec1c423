"""The `illbridge` command: serve, worker, migrate, institutions, tokens, OpenAPI, sandbox."""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import signal
import sys
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from app.config import Settings, get_settings
from app.institutions.models import SCOPES
from app.timeutil import utcnow


def _json_arg(value: str | None) -> dict[str, Any]:
    if value is None:
        return {}
    try:
        text = Path(value[1:]).read_text() if value.startswith("@") else value
        data = json.loads(text)
    except OSError as exc:
        raise SystemExit(f"cannot read the configuration file: {exc.strerror}") from None
    except json.JSONDecodeError as exc:
        raise SystemExit(f"the configuration is not valid JSON: {exc.msg}") from None
    if not isinstance(data, dict):
        raise SystemExit("the configuration must be a JSON object")
    return data


def _whole_number(low: int, high: int) -> Callable[[str], int]:
    def parse(value: str) -> int:
        try:
            number = int(value)
        except ValueError:
            number = low - 1
        if not low <= number <= high:
            raise argparse.ArgumentTypeError(f"a whole number from {low} to {high}")
        return number

    return parse


def _check_secret_key(settings: Settings) -> None:
    """The lifespan checks too; here a wrong key is one line, not a server's traceback."""
    from app.db import create_db_engine
    from app.institutions.secrets import check_stored_secrets, load_secret_box

    engine = create_db_engine(settings.database_url)
    try:
        check_stored_secrets(engine, load_secret_box(settings))
    finally:
        engine.dispose()


def cmd_serve(args: argparse.Namespace) -> None:
    import uvicorn

    from app.main import create_app
    from app.observability import configure_logging

    settings = get_settings()
    configure_logging(settings.log_level)
    _check_secret_key(settings)
    app = create_app(settings, run_worker=not args.no_worker)
    # What start-up built (routes, models, table metadata) lives as long as the process: frozen,
    # the collector's full passes no longer walk it, and those pauses were the webhook
    # listener's slowest answers (bench/webhooks.py, README).
    gc.freeze()
    # Access lines are off (the request metrics count every request; no per-request log line).
    uvicorn.run(
        app,
        host=args.host,
        port=args.port,
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=30,
    )


def cmd_worker(_args: argparse.Namespace) -> None:
    from app.observability import Metrics, configure_logging
    from app.runtime import open_runtime
    from app.workflows.registry import new_worker

    settings = get_settings()
    configure_logging(settings.log_level)

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        async with open_runtime(settings, Metrics()) as runtime:
            await new_worker(runtime).run(stop)

    asyncio.run(main())


def cmd_migrate(args: argparse.Namespace) -> None:
    from app.migrations import downgrade, upgrade

    settings = get_settings()
    if args.revision.startswith("-") or args.revision == "base":
        downgrade(settings.database_url, args.revision)
    else:
        upgrade(settings.database_url, args.revision)
    print(f"database migrated to {args.revision}")


def cmd_openapi(args: argparse.Namespace) -> None:
    from app.openapi import render_openapi_yaml

    text = render_openapi_yaml()
    if args.output == "-":
        sys.stdout.write(text)
    else:
        Path(args.output).write_text(text)
        print(f"wrote {args.output}")


def cmd_secret_key(_args: argparse.Namespace) -> None:
    from cryptography.fernet import Fernet

    print(Fernet.generate_key().decode())


def _admin_session() -> Any:
    from app.db import engine_for, write_session
    from app.institutions.secrets import load_secret_box

    settings = get_settings()
    engine = engine_for(settings)
    return write_session(engine), load_secret_box(settings)


def cmd_institution(args: argparse.Namespace) -> None:
    from app.errors import describe_validation_errors
    from app.institutions import service
    from app.institutions.schemas import InstitutionCreate, InstitutionUpdate
    from app.outbound_hosts import allowed_host_patterns

    allowed = allowed_host_patterns(get_settings())
    session_cm, box = _admin_session()
    with session_cm as session:
        try:
            if args.action == "add":
                data = {"code": args.code, "name": args.name, **_json_arg(args.config)}
                institution = service.create_institution(
                    session,
                    box,
                    InstitutionCreate.model_validate(data),
                    actor=service.CLI,
                    allowed_hosts=allowed,
                )
            elif args.action == "update":
                data = _json_arg(args.config)
                if args.name:
                    data["name"] = args.name
                if args.active is not None:
                    data["active"] = args.active
                institution = service.get_by_code(session, args.code)
                service.update_institution(
                    session,
                    box,
                    institution,
                    InstitutionUpdate.model_validate(data),
                    actor=service.CLI,
                    allowed_hosts=allowed,
                )
            else:
                for institution in service.list_institutions(session):
                    print(service.to_public(institution, box).model_dump_json())
                return
        except ValidationError as exc:
            # Pydantic's own text echoes each input, and an input may be a secret.
            problems = describe_validation_errors(exc.errors(), whole="configuration")
            raise SystemExit(
                "invalid institution configuration:\n" + "\n".join(f"  {p}" for p in problems)
            ) from None
        session.commit()
        print(service.to_public(institution, box).model_dump_json(indent=2))


def cmd_rotate_secrets(_args: argparse.Namespace) -> None:
    from app.institutions import service

    session_cm, box = _admin_session()
    with session_cm as session:
        rewritten = service.rotate_secrets(session, box, actor=service.CLI)
        session.commit()
    print(f"re-encrypted {rewritten} stored secret value(s) with the newest key")


def cmd_token(args: argparse.Namespace) -> None:
    from app.db import engine_for, read_session, write_session
    from app.institutions import service

    engine = engine_for(get_settings())
    if args.action == "list":
        with read_session(engine) as session:
            for shown in service.list_tokens(session, institution_id=None):
                print(shown.model_dump_json())
        return
    with write_session(engine) as session:
        if args.action == "revoke":
            revoked = service.revoke_token(session, args.id, institution_id=None)
            session.commit()
            print(f"token {revoked.id} ({revoked.name}) revoked")
            return
        institution = service.get_by_code(session, args.institution) if args.institution else None
        expires_at = None
        if args.expires_in_days is not None:
            expires_at = utcnow() + timedelta(days=args.expires_in_days)
        try:
            token, plain = service.create_token(
                session,
                name=args.name,
                scopes=args.scope,
                institution=institution,
                expires_at=expires_at,
            )
        except ValueError as exc:
            raise SystemExit(str(exc)) from None
        session.commit()
    expiry = f", expires {token.expires_at:%Y-%m-%d %H:%M} UTC" if token.expires_at else ""
    print(f"token {token.id} ({token.name}), scopes {' '.join(token.scopes)}{expiry}")
    print("Store it now; it is shown only once:")
    print(plain)


def cmd_cleanup(args: argparse.Namespace) -> None:
    """A dry run prints the plan; a real run is carried out here, one request at a time."""
    from app.api.cleanup import batch_public
    from app.borrowing.cleanup import CleanupBatch
    from app.db import engine_for, read_session, write_session
    from app.institutions.service import get_by_code
    from app.observability import Metrics, configure_logging
    from app.runtime import open_runtime
    from app.workflows import cleanup

    settings = get_settings()
    configure_logging(settings.log_level)
    engine = engine_for(settings)
    try:
        with write_session(engine) as session:
            institution = get_by_code(session, args.institution)
            if args.dry_run:
                batch = cleanup.dry_run(session, institution, limit=args.limit, requested_by="cli")
            else:
                batch = cleanup.start_run(
                    session, institution, limit=args.limit, requested_by="cli", queue=False
                )
            session.commit()
            batch_id, code = batch.id, institution.code
        assert batch_id is not None
        if not args.dry_run:

            async def run() -> None:
                async with open_runtime(settings, Metrics()) as runtime:
                    await cleanup.run_batch(runtime, batch_id)

            asyncio.run(run())
        with read_session(engine) as session:
            stored = session.get(CleanupBatch, batch_id)
            assert stored is not None
            print(batch_public(session, stored, code).model_dump_json(indent=2))
    finally:
        engine.dispose()


def cmd_purge(args: argparse.Namespace) -> None:
    from app.db import engine_for, read_session, write_session
    from app.institutions import service
    from app.workflows import retention

    engine = engine_for(get_settings())
    opener = read_session if args.dry_run else write_session
    with opener(engine) as session:
        if args.institution:
            service.get_by_code(session, args.institution)
        step = retention.purge_plan if args.dry_run else retention.purge_patron_data
        plan = step(session, institution_code=args.institution, limit=args.limit)
        if not args.dry_run:
            session.commit()
    for item in plan:
        print(
            json.dumps(
                {
                    "request_id": item.request_id,
                    "institution": item.institution,
                    "state": item.state,
                    "closed_at": item.closed_at.isoformat(),
                    "fields": list(item.fields),
                }
            )
        )
    verb = "would purge" if args.dry_run else "purged"
    print(f"{verb} the patron links of {len(plan)} request(s)", file=sys.stderr)


def cmd_sandbox_seed(args: argparse.Namespace) -> None:
    from app.sandbox.demo import seed_demo

    seed_demo(get_settings(), public_url=args.public_url)


def cmd_demo(args: argparse.Namespace) -> None:
    from app.sandbox.demo import read_demo_token, run_demo

    run_demo(
        args.url,
        args.token or read_demo_token(),
        alma_request_id=args.request_id,
        step_seconds=args.step_seconds,
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="illbridge", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="serve the API (with an in-process worker)")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--no-worker", action="store_true", help="serve the API alone")
    serve.set_defaults(func=cmd_serve)

    worker = commands.add_parser("worker", help="run a worker alone (SIGTERM drains it)")
    worker.set_defaults(func=cmd_worker)

    migrate = commands.add_parser("migrate", help="apply the database migrations")
    migrate.add_argument("revision", nargs="?", default="head", help="head, base or -1")
    migrate.set_defaults(func=cmd_migrate)

    openapi = commands.add_parser("openapi", help="write the OpenAPI document as YAML")
    openapi.add_argument("--output", default="openapi.yaml", help="a path, or - for stdout")
    openapi.set_defaults(func=cmd_openapi)

    secret = commands.add_parser("secret-key", help="print a new ILLBRIDGE_SECRET_KEY")
    secret.set_defaults(func=cmd_secret_key)

    institution = commands.add_parser("institution", help="add, list or update institutions")
    actions = institution.add_subparsers(dest="action", required=True)
    add = actions.add_parser("add")
    add.add_argument("--code", required=True)
    add.add_argument("--name", required=True)
    add.add_argument("--config", help="JSON (or @file) with alma, worldshare and policy groups")
    actions.add_parser("list")
    update = actions.add_parser("update")
    update.add_argument("--code", required=True)
    update.add_argument("--name")
    update.add_argument("--config", help="JSON (or @file) with the groups to change")
    update.add_argument("--active", dest="active", action="store_true", default=None)
    update.add_argument("--inactive", dest="active", action="store_false")
    institution.set_defaults(func=cmd_institution)

    rotate = commands.add_parser(
        "rotate-secrets",
        help="re-encrypt every stored secret with the newest key of ILLBRIDGE_SECRET_KEYS",
    )
    rotate.set_defaults(func=cmd_rotate_secrets)

    token = commands.add_parser("token", help="create, list or revoke API tokens")
    token_actions = token.add_subparsers(dest="action", required=True)
    create = token_actions.add_parser("create")
    create.add_argument("--name", required=True)
    create.add_argument("--scope", action="append", required=True, choices=SCOPES)
    create.add_argument("--institution", help="bind the token to one institution")
    create.add_argument(
        "--expires-in-days",
        type=_whole_number(1, 36500),
        help="refuse the token after this many days",
    )
    token_actions.add_parser("list", help="one JSON line per token (never its value)")
    revoke = token_actions.add_parser("revoke", help="refuse a token from now on")
    revoke.add_argument("id", type=_whole_number(1, 2**31 - 1))
    token.set_defaults(func=cmd_token)

    clean = commands.add_parser(
        "cleanup", help="cancel in Alma the stale requests whose WorldShare side is over"
    )
    clean.add_argument("--institution", required=True)
    clean.add_argument(
        "--dry-run", action="store_true", help="print the plan from cached statuses; send nothing"
    )
    clean.add_argument("--limit", type=_whole_number(1, 1000), default=100)
    clean.set_defaults(func=cmd_cleanup)

    purge = commands.add_parser(
        "purge", help="purge patron links of requests ended more than policy.retention_days ago"
    )
    purge.add_argument("--dry-run", action="store_true", help="list what would go, change nothing")
    purge.add_argument("--institution", help="one institution's code (default: all)")
    purge.add_argument("--limit", type=_whole_number(1, 1_000_000), default=100_000)
    purge.set_defaults(func=cmd_purge)

    sandbox = commands.add_parser("sandbox-seed", help="create the demo institution and a token")
    sandbox.add_argument("--public-url", default=None)
    sandbox.set_defaults(func=cmd_sandbox_seed)

    demo = commands.add_parser("demo", help="play Alma against a running sandbox service")
    demo.add_argument("--url", default="http://127.0.0.1:8000")
    demo.add_argument("--token", help="defaults to the one sandbox-seed kept under var/")
    demo.add_argument("--request-id", default=f"DEMO-{int(time.time())}")
    demo.add_argument(
        "--step-seconds", type=float, default=120.0, help="how long each step may take (120)"
    )
    demo.set_defaults(func=cmd_demo)
    return parser


def main(argv: list[str] | None = None) -> None:
    from sqlalchemy.exc import OperationalError

    from app.errors import AppError
    from app.institutions.secrets import SecretKeyError

    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except AppError as exc:
        raise SystemExit(f"error: {exc.detail}") from None
    except SecretKeyError as exc:
        raise SystemExit(f"error: {exc}") from None
    except OperationalError as exc:
        reason = str(exc.orig).strip().splitlines()[0] if exc.orig else type(exc).__name__
        raise SystemExit(
            f"error: the database refused: {reason} (is it reachable and migrated? "
            "`illbridge migrate`)"
        ) from None


if __name__ == "__main__":
    main()
