"""pgjobs' operator console: a Streamlit multipage app over `pgjobs.admin.Admin` (no SQL here).

Layout: `app.py` (entry: sign-in, sidebar, navigation), `pages/*.py` (one file per page), `ui.py` (shared
helpers: the cached connection pool, the signed-in Admin, time and text formatting), `auth.py` (password
hashes and users), `run.py` (the launcher that refuses an unauthenticated console on a public address),
`guard.py` and `serve.py` (the Host/Origin check in front of every Streamlit route).
"""
