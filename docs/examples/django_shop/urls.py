from django.contrib import admin
from django.urls import path

from . import task_views, views

urlpatterns = [
    path("checkout", views.checkout),
    path("order", task_views.place_order),
    path("order/task/<str:result_id>", task_views.order_task),
    path("admin/", admin.site.urls),
]
