from django.urls import path

from . import views

urlpatterns = [
    path("", views.create_deal, name="create-deal"),
    path("nearest", views.nearest_deals, name="nearest-deals"),
]
