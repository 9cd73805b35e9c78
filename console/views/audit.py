"""Audit log: every change made through the admin API (console, CLI, code), with who, when, before, after."""

from __future__ import annotations

import streamlit as st

from console import ui

st.title("Audit log")


def render() -> None:
    admin = ui.admin()
    c1, c2 = st.columns([4, 1])
    entity = c1.text_input("Schedule name or job id (exact)", key="audit_entity")
    size = c2.selectbox("Per page", [25, 50, 100, 200], index=1, key="audit_size")
    signature = (entity, size)
    if st.session_state.get("_audit_signature") != signature:
        st.session_state["_audit_signature"] = signature
        st.session_state["audit_cursors"] = []
    cursors: list[int] = st.session_state.setdefault("audit_cursors", [])
    rows = ui.run("audit", admin.audit, limit=size + 1, entity_name=entity.strip() or None,
                  before_id=cursors[-1] if cursors else None)
    if rows is None:
        return
    more, rows = len(rows) > size, rows[:size]
    st.caption(f"page {len(cursors) + 1} · newest first · times in {st.session_state.get('tz', 'UTC')}")
    ui.table(rows, {"id": "#", "at": "When", "actor": "Who", "action": "Action", "entity": "Kind",
                    "entity_name": "Name"}, times=["at"], key="audit_table")
    prev, _, nxt = st.columns([2, 6, 2])
    if prev.button("Newer", icon=":material/chevron_left:", key="audit_prev", disabled=not cursors):
        cursors.pop()
        st.rerun()
    if nxt.button("Older", icon=":material/chevron_right:", key="audit_next", disabled=not more):
        cursors.append(rows[-1]["id"])
        st.rerun()
    if not rows:
        return
    by_id = {r["id"]: r for r in rows}
    chosen = st.selectbox("Change", list(by_id), key="audit_pick",
                          format_func=lambda i: f"#{i} {by_id[i]['action']} {by_id[i]['entity']} "
                                                f"{by_id[i]['entity_name']} by {by_id[i]['actor']}")
    row = by_id[chosen]
    before, after = st.columns(2)
    for col, label, value in ((before, "Before", row["before"]), (after, "After", row["after"])):
        with col:
            st.markdown(f"**{label}**")
            if value is None:
                st.text("none")
            else:
                st.json(value)


ui.live(render)
