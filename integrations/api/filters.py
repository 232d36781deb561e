"""Filters shared by every API list.

``IdFilter`` filters by a related object's id without loading it: another tenant's id
and an id that does not exist give the same answer (an empty page), so a filter is no
oracle for what exists elsewhere; a value that is not an id (``abc``, ``1.5``, a number
past the database's range) is a 400 that says so.
"""

from __future__ import annotations

import django_filters
from django import forms

MAX_ID = 2**63 - 1
MAX_DAYS = 3650


class IdField(forms.IntegerField):
    def __init__(self, *args, **kwargs):
        kwargs.setdefault("min_value", 1)
        kwargs.setdefault("max_value", MAX_ID)
        super().__init__(*args, **kwargs)


class IdFilter(django_filters.NumberFilter):
    field_class = IdField


class DaysField(forms.IntegerField):
    def __init__(self, *args, **kwargs):
        kwargs.update(min_value=0, max_value=MAX_DAYS)
        super().__init__(*args, **kwargs)


class DaysFilter(django_filters.NumberFilter):
    field_class = DaysField
