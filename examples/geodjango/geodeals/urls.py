from django.urls import include, path

urlpatterns = [
    path("deals/", include("deals.urls")),
]
