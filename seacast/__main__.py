"""``python -m seacast``: the same command line as the ``seacast`` script."""

from seacast.cli import app

if __name__ == "__main__":
    app(prog_name="seacast")
