"""Django management commands of koyojobs (``manage.py koyojobs``)."""
