import importlib.util
import sys

# The console's dependencies are the `console` extra: a worker-only install has pgjobs without them.
_missing = [name for name in ("streamlit", "pandas") if importlib.util.find_spec(name) is None]
if _missing:
    print(f"console: {' and '.join(_missing)} not installed: pip install 'pgjobs[console]'", file=sys.stderr)
    raise SystemExit(2)

from console.run import main  # noqa: E402 - after the dependency check

raise SystemExit(main())
