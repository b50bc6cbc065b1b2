"""The `fleet` command line: one typer sub-app per noun; parse, call the domain, render."""
