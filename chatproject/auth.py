"""The API's token authentication: DRF's TokenAuthentication, with the token and its user read in one SQL statement
compiled once from the ORM's query, instead of compiled for every request (a fifth of the web process's CPU per
start in `python -m bench.profile start`).

The user comes back with its key and `is_active` loaded; any other field is read on first use, as for a queryset's
`only()`. A revoked token or a deactivated user stops working at once, as with DRF's own class.
"""

import functools

from django.contrib.auth import get_user_model
from django.db import DEFAULT_DB_ALIAS, connections
from django.utils.translation import gettext_lazy as _
from rest_framework import authentication, exceptions
from rest_framework.authtoken.models import Token


class TokenAuthentication(authentication.TokenAuthentication):
    def authenticate_credentials(self, key: str) -> tuple:
        connection = connections[DEFAULT_DB_ALIAS]
        with connection.cursor() as cursor:
            cursor.execute(_token_owner_sql(connection.vendor), [key])
            row = cursor.fetchone()
        if row is None:
            raise exceptions.AuthenticationFailed(_("Invalid token."))
        user_id, is_active = row
        if not is_active:
            raise exceptions.AuthenticationFailed(_("User inactive or deleted."))
        user = get_user_model().from_db(DEFAULT_DB_ALIAS, ["id", "is_active"], [user_id, True])
        return user, Token.from_db(DEFAULT_DB_ALIAS, ["key", "user_id"], [key, user_id])


@functools.cache
def _token_owner_sql(vendor: str) -> str:
    owner = Token.objects.filter(key="").values_list("user_id", "user__is_active")[:1]
    sql, _params = owner.query.sql_with_params()
    return sql
