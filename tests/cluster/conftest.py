"""The `slurm` marker (also to be listed in pyproject.toml with the other markers)."""


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "slurm: runs the workflow on a real one-node SLURM cluster (root, ~3 min)"
    )
