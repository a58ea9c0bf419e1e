"""The shop's tasks, written with Django's own ``@task``: koyojobs' worker runs them."""

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from django.tasks import task
else:
    try:
        from django.tasks import task  # Django 6
    except ImportError:  # Django 5.2, with the django-tasks backport
        from django_tasks import task

from .models import Order


# A plain def runs on the worker's threads, where Django's ORM is at home.
@task(queue_name="emails", priority=10)
def send_confirmation(order_id: int) -> str:
    order = Order.objects.get(id=order_id)  # committed before the task could run
    ...  # send the email
    Order.objects.filter(id=order_id).update(receipt_sent=True)
    return f"confirmation for order {order.id} sent to {order.email}"
