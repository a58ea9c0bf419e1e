from decimal import Decimal

from django.db import transaction
from django.http import HttpRequest, JsonResponse

from .models import Order
from .tasks import send_confirmation


def place_order(request: HttpRequest) -> JsonResponse:
    with transaction.atomic():
        order = Order.objects.create(
            email=request.POST["email"], total=Decimal(request.POST["total"])
        )
        # Inserted in this transaction: no transaction.on_commit() needed.
        # If anything below raises, the order and its task roll back together.
        result = send_confirmation.enqueue(order.id)
        if order.total <= 0:
            raise ValueError(f"order total must be positive, got {order.total}")
    return JsonResponse({"order": order.id, "task": result.id}, status=201)


def order_task(request: HttpRequest, result_id: str) -> JsonResponse:
    result = send_confirmation.get_result(result_id)  # a query: where the job stands now
    body = {"status": result.status, "attempts": result.attempts}
    if result.status == "SUCCESSFUL":
        body["return_value"] = result.return_value
    return JsonResponse(body)
