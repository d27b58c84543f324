from rest_framework import status, viewsets
from rest_framework.request import Request
from rest_framework.response import Response

from chat.serializers import StartedSessionSerializer, StartSessionSerializer
from chat.services import session_start


class SessionViewSet(viewsets.GenericViewSet):
    serializer_class = StartSessionSerializer

    def create(self, request: Request) -> Response:
        payload = StartSessionSerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        started = session_start(user=request.user, session_id=payload.validated_data.get("session_id"))
        return Response(StartedSessionSerializer(started).data, status=status.HTTP_202_ACCEPTED)
