"""``python -m seacast.cli ...`` (what torchrun runs): the same CLI as the ``seacast`` script."""

from seacast.cli import app

if __name__ == "__main__":
    app()
