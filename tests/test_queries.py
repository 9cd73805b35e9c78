"""The statements of pgjobs/queries.py are real attributes: the annotated names of `Statements` and the keys of
`TEMPLATES` are one set, so a statement cannot be added to one and forgotten in the other."""

import pytest

from pgjobs.queries import TEMPLATES, Queries, Statements, queries


def test_every_template_is_an_annotated_attribute_and_nothing_else():
    annotated = set(Statements.__annotations__)
    assert annotated - set(TEMPLATES) == set(), "annotated in Statements but not in TEMPLATES"
    assert set(TEMPLATES) - annotated == set(), "in TEMPLATES but not annotated in Statements"


def test_each_statement_is_rendered_for_its_schema():
    q = queries("some_schema")
    assert isinstance(q, Queries)
    for name in TEMPLATES:
        assert isinstance(getattr(q, name), str)
    assert '"some_schema".jobs' in q.claim_jobs
    assert "{s}" not in q.claim_jobs


def test_an_unknown_statement_name_is_an_attribute_error():
    name = "no_such_statement"
    with pytest.raises(AttributeError):
        getattr(queries("pgjobs"), name)
