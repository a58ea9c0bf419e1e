"""The ``koyojobs`` management command."""
