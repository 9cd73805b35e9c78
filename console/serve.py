"""`python -m console.serve run console/app.py [streamlit options]`: Streamlit's own CLI with the console's
Host/Origin guard (`console/guard.py`) installed in front of every route. `python -m console` runs this."""

from __future__ import annotations

import sys

from console import guard


def main() -> int:
    guard.install()
    from streamlit.web import cli

    sys.argv[0] = "streamlit"
    return cli.main(prog_name="streamlit")


if __name__ == "__main__":
    raise SystemExit(main())
