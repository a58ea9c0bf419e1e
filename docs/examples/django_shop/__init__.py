"""A small Django app: an order placed in a view, its receipt sent by a job."""
