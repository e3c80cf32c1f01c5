"""The runtimes' own signals: hooks (Claude Code), notify (Codex), an extension (pi).

Kept import-free: `python -m agent.hooks.send` runs inside every hook call of a runtime and
must start fast (stdlib only).
"""
