from koyojobs import define_job

from .models import Order


# A plain def: the worker runs it on a thread, where Django's ORM is at home.
@define_job(queue="emails", max_attempts=5)
def send_receipt(order_id: int) -> str:
    order = Order.objects.get(id=order_id)  # committed before the job could run
    ...  # send the email
    Order.objects.filter(id=order_id).update(receipt_sent=True)
    return f"receipt for order {order.id} sent to {order.email}"
