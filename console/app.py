"""The console's entry point: `streamlit run console/app.py` (or `python -m console`, which checks the
address and the users first). Signs the user in, draws the sidebar and runs the chosen page."""

from __future__ import annotations

import sys
from pathlib import Path

_ROOT = str(Path(__file__).resolve().parent.parent)
if _ROOT not in sys.path:  # `streamlit run` puts console/ on the path, not the repository root
    sys.path.insert(0, _ROOT)

import streamlit as st  # noqa: E402

from console import ui  # noqa: E402

# a local icon: ":material/..." or an emoji would make the browser fetch it from a CDN (offline: no request
# leaves the machine)
st.set_page_config(page_title="pgjobs console", page_icon=str(Path(__file__).parent / "static" / "favicon.png"),
                   layout="wide")
# Narrower side padding than Streamlit's 5rem, so the wide tables fit at 1280 px (a constant, no data).
st.html("<style>[data-testid='stMainBlockContainer'] {padding-left: 1.5rem; padding-right: 1.5rem; "
        "padding-top: 2.5rem; max-width: none;}</style>")
user = ui.require_user()
PAGES = [
    st.Page("views/overview.py", title="Overview", icon=":material/dashboard:", default=True),
    st.Page("views/schedules.py", title="Schedules", icon=":material/calendar_month:"),
    st.Page("views/schedule_detail.py", title="Schedule detail", icon=":material/monitoring:"),
    st.Page("views/jobs.py", title="Jobs", icon=":material/list_alt:"),
    st.Page("views/workers.py", title="Workers", icon=":material/memory:"),
    st.Page("views/audit.py", title="Audit log", icon=":material/history:"),
]
ui.sidebar(user)
page = st.navigation(PAGES)
ui.show_flash()
page.run()
