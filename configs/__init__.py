"""The shipped configs, one system per file (`get_config(variant)`), not a config itself.

This folder is installed as `colorjax.configs` (pyproject.toml), so every command's `--config`
takes a shipped config by name where no such file exists: `--config quick_cpu:cpu` from an
installed colorjax is this folder's `quick_cpu.py` (colorjax/cli.py, `shipped_configs`).
"""
