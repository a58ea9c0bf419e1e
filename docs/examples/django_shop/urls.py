from django.contrib import admin
from django.urls import path

from . import views

urlpatterns = [
    path("checkout", views.checkout),
    path("admin/", admin.site.urls),
]
