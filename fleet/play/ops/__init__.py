"""The built-in playbook operations, one module per subsystem (pyinfra's layout).

Each operation reads the device's facts, decides with the same function the
matching command uses, then acts unless ``ctx.check``. They call the domain
(`fleet.ota`, `fleet.health`, `fleet.logs`, ...), never the CLI. They are
registered by name in `fleet.play.operations.BUILTIN` and imported when a
playbook names one.
"""
