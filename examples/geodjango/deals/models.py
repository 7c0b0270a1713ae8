from django.contrib.gis.db import models


class Deal(models.Model):
    title = models.CharField(max_length=200)
    # geography: distances and ST_DWithin work in metres on the spheroid,
    # anywhere on Earth, with no projection to choose per city. The field
    # gets a GiST index (spatial_index defaults to True).
    point = models.PointField(geography=True, srid=4326)
    expires_at = models.DateTimeField(db_index=True)
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return self.title
