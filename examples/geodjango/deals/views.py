"""Two endpoints: the nearest open deals (a read, served by replicas) and a new deal (a write)."""

import json
from datetime import timedelta

from django.contrib.gis.db.models.functions import Distance
from django.contrib.gis.geos import Point
from django.contrib.gis.measure import D
from django.http import JsonResponse
from django.utils import timezone
from django.utils.dateparse import parse_datetime
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET, require_POST

from .models import Deal

MAX_RADIUS_KM = 50.0
MAX_LIMIT = 100
MAX_TITLE_LENGTH = Deal._meta.get_field("title").max_length


class BadRequest(ValueError):
    pass


def _number(raw, name, low, high, default=None):
    if raw is None or raw == "":
        if default is None:
            raise BadRequest(f"{name} is required")
        return default
    if isinstance(raw, bool):
        raise BadRequest(f"{name} must be a number, got {raw!r}")
    try:
        value = float(raw)
    except (TypeError, ValueError):
        raise BadRequest(f"{name} must be a number, got {raw!r}") from None
    # float() accepts "nan" and "inf", which no comparison below rejects.
    if not (low <= value <= high):
        raise BadRequest(f"{name} must be between {low} and {high}, got {raw!r}")
    return value


def _bad_request(err):
    return JsonResponse({"error": str(err)}, status=400)


def _feature(deal):
    return {
        "type": "Feature",
        "id": deal.id,
        "geometry": {"type": "Point", "coordinates": [deal.point.x, deal.point.y]},
        "properties": {
            "title": deal.title,
            "expires_at": deal.expires_at.isoformat(),
            "distance_m": round(deal.distance.m, 1),
        },
    }


@require_GET
def nearest_deals(request):
    """GET /deals/nearest?lat=&lon=&km=2&limit=10 -> GeoJSON FeatureCollection, nearest first."""
    try:
        lat = _number(request.GET.get("lat"), "lat", -90, 90)
        lon = _number(request.GET.get("lon"), "lon", -180, 180)
        km = _number(request.GET.get("km"), "km", 0.001, MAX_RADIUS_KM, default=2.0)
        limit = int(_number(request.GET.get("limit"), "limit", 1, MAX_LIMIT, default=10))
    except BadRequest as err:
        return _bad_request(err)

    here = Point(lon, lat, srid=4326)
    # ST_DWithin on geography uses the GiST index and metres; ordering by
    # ST_Distance then only sorts the few rows inside the radius.
    deals = (
        Deal.objects.filter(point__dwithin=(here, D(km=km)), expires_at__gt=timezone.now())
        .annotate(distance=Distance("point", here))
        .order_by("distance", "id")[:limit]
    )
    return JsonResponse({"type": "FeatureCollection", "features": [_feature(d) for d in deals]})


# A JSON API without cookie authentication: there is no session for CSRF to protect.
@csrf_exempt
@require_POST
def create_deal(request):
    """POST /deals/ {"title", "lat", "lon", "expires_at"? | "ttl_minutes"?} -> 201 {"id"}."""
    try:
        body = json.loads(request.body or b"null")
        if not isinstance(body, dict):
            raise BadRequest("the body must be a JSON object")
        title = body.get("title")
        if not isinstance(title, str) or not title.strip() or len(title) > MAX_TITLE_LENGTH:
            raise BadRequest(f"title must be a non-empty string of at most {MAX_TITLE_LENGTH} characters")
        lat = _number(body.get("lat"), "lat", -90, 90)
        lon = _number(body.get("lon"), "lon", -180, 180)
        if body.get("expires_at") is not None:
            try:
                expires_at = parse_datetime(str(body["expires_at"]))
            except ValueError:  # well formed but impossible, like month 13
                expires_at = None
            if expires_at is None or timezone.is_naive(expires_at):
                raise BadRequest("expires_at must be an ISO 8601 date-time with a UTC offset")
        else:
            ttl_minutes = _number(body.get("ttl_minutes"), "ttl_minutes", 1, 60 * 24 * 365, default=60.0)
            expires_at = timezone.now() + timedelta(minutes=ttl_minutes)
    except json.JSONDecodeError as err:
        return _bad_request(f"the body is not JSON: {err}")
    except BadRequest as err:
        return _bad_request(err)

    # A write: the router sends it to `default` (the leader) and pins the rest of this request there.
    deal = Deal.objects.create(title=title.strip(), point=Point(lon, lat, srid=4326), expires_at=expires_at)
    return JsonResponse({"id": deal.id}, status=201)
