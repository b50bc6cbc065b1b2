"""fleet secrets: the project's key for secrets at rest (camera passwords)."""

from __future__ import annotations

import typer

from fleet.cli import options as o
from fleet.cli.context import app_of

app = typer.Typer(help="Secrets at rest: rotate the key camera passwords are sealed with.",
                  no_args_is_help=True)


@app.command()
def rotate(ctx: typer.Context, dry_run: o.DryRun = False, json: o.Json = False) -> None:
    """Make a new .fleet/secret.key and re-seal every camera password with it (one
    transaction). Safe to interrupt: run it again to finish. No secret is printed."""
    from fleet.registry import open_registry
    from fleet.registry.sqlite import SQLiteRegistry
    from fleet.secrets import KEY_FILE, ensure_rotatable, secret_box

    a = app_of(ctx)
    with a.guarded(), open_registry(a.project) as registry:
        if registry.backend != "sqlite" or not isinstance(registry, SQLiteRegistry):
            a.abort("the aws registry keeps camera passwords in AWS Secrets Manager;"
                    " rotate them there", 2)
        ensure_rotatable()
        if dry_run:
            count = registry.count_secrets()
            has_key = (a.project.state_dir / KEY_FILE).exists()  # a dry run makes none
            current = secret_box(a.project.state_dir).key_id if has_key else None
            if json:
                a.output_json({"dry_run": True, "key_id": current, "would_reseal": count})
            else:
                a.display_info(f"would make a new key (now key id {current}) and re-seal"
                               f" {count} secret(s); nothing changed")
            return
        rotation = registry.rotate_secret_key()
    if json:
        a.output_json({"old_key_id": rotation.old_key_id, "new_key_id": rotation.new_key_id,
                       "resealed": rotation.resealed, "resumed": rotation.resumed})
        return
    finished = " (finished an interrupted rotation)" if rotation.resumed else ""
    a.display_success(f"secret key {rotation.old_key_id} -> {rotation.new_key_id}:"
                      f" {rotation.resealed} secret(s) re-sealed{finished}")
