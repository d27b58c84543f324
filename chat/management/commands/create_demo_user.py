from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError
from rest_framework.authtoken.models import Token

DEMO_USERNAME = "demo"
DEMO_PASSWORD = "demo"
# Where the assistant's send_email tool writes to (EMAIL_URL=consolemail:// prints it in the worker's output).
DEMO_EMAIL = "demo@example.com"


class Command(BaseCommand):
    help = (
        "Creates (once) the staff user demo/demo (demo@example.com) and its API token, and prints how to use them. "
        "DEBUG only."
    )

    def handle(self, *args: object, **options: object) -> None:
        if not settings.DEBUG:
            raise CommandError("Refusing to create a demo user with a known password while DJANGO_DEBUG is off.")
        user, created = get_user_model().objects.get_or_create(
            username=DEMO_USERNAME, defaults={"is_staff": True, "is_superuser": True, "email": DEMO_EMAIL}
        )
        if created:
            user.set_password(DEMO_PASSWORD)
            user.save(update_fields=["password"])
        elif not user.email:  # made before the assistant could email: give it an address
            user.email = DEMO_EMAIL
            user.save(update_fields=["email"])
        token, _ = Token.objects.get_or_create(user=user)
        self.stdout.write(
            f"""
  Chat       http://127.0.0.1:8000/         (user {DEMO_USERNAME}, password {DEMO_PASSWORD})
  Admin      http://127.0.0.1:8000/admin/   (the same)
  API        http://127.0.0.1:8000/api/sessions/
  Temporal   http://localhost:8233

  Start a session:
    curl -X POST http://127.0.0.1:8000/api/sessions/ \\
         -H 'Authorization: Token {token.key}' -H 'Content-Type: application/json' -d '{{}}'
"""
        )
