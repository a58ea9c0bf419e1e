"""koyojobs for Django: add ``"koyojobs.contrib.django"`` to ``INSTALLED_APPS``.

The app reads ``settings.KOYOJOBS`` (see :mod:`koyojobs.contrib.django.conf`)
and the database of ``DATABASES``, points :mod:`koyojobs.sync` at both, adds
``python manage.py koyojobs worker ...`` (and every other command of the
``koyojobs`` CLI, with its options) and a read-only view of the jobs in the
admin. Enqueue inside a view's transaction with
``koyojobs.sync.enqueue(call, connection=django.db.connection)``.

Example:
    >>> INSTALLED_APPS = [..., "koyojobs.contrib.django"]  # doctest: +SKIP
    >>> KOYOJOBS = {"modules": ["shop.jobs"], "queues": {"default": 8}}  # doctest: +SKIP
"""
