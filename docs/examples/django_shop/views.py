from decimal import Decimal

from django.db import connection, transaction
from django.http import HttpRequest, JsonResponse

from koyojobs.sync import enqueue

from .jobs import send_receipt
from .models import Order


def checkout(request: HttpRequest) -> JsonResponse:
    with transaction.atomic():
        order = Order.objects.create(
            email=request.POST["email"], total=Decimal(request.POST["total"])
        )
        # On Django's connection, inside the transaction: if anything below
        # raises, the order and its job are rolled back together.
        job_id = enqueue(send_receipt(order.id), connection=connection)
        if order.total <= 0:
            raise ValueError(f"order total must be positive, got {order.total}")
    return JsonResponse({"order": order.id, "receipt_job": job_id}, status=201)
