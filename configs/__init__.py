"""The shipped configs, one system per file (`get_config(variant)`); this file is no config.

pyproject.toml installs this folder as `colorjax.configs`, so where no such file exists every
command's `--config` takes a shipped config by name: from an installed colorjax,
`--config pix2pix_resnet18:cpu` is this folder's `pix2pix_resnet18.py` with its `cpu` variant
(colorjax/cli.py, `config_file`).
"""
