"""torchclass_hub: the classroom's JupyterHub configuration, accounts and `torchclass-hub` CLI."""
