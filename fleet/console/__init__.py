"""The web console served by `fleet serve` (docs/console.md).

A thin layer over the domain modules: it reads the registry, the rollout
journals and the health sweeps, and acts only through the functions the CLI calls.
"""
