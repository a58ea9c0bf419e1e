"""A real Django project for tests/acceptance/test_django.py, run in subprocesses
(DJANGO_SETTINGS_MODULE=djproject.settings) so that no setting leaks into other tests."""
