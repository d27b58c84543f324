"""`manage.py runserver`: Django's development server command, serving the project's ASGI application under uvicorn.

Django's own runserver is a WSGI server, which holds back an async streaming response until it ends: an event
stream, which never ends, would show nothing. This one serves what production serves (ASGI_APPLICATION, under
uvicorn), with Django's arguments, checks, start-up lines and autoreloader.
"""

import argparse
import errno
import os
import socket
import sys

import uvicorn
from django.conf import settings
from django.core.management.commands.runserver import Command as RunserverCommand
from django.db import connections
from django.utils import autoreload
from django.utils.module_loading import import_string

# Django's wording for the usual bind failures.
BIND_ERRORS = {
    errno.EACCES: "You don't have permission to access that port.",
    errno.EADDRINUSE: "That port is already in use.",
    errno.EADDRNOTAVAIL: "That IP address can't be assigned to.",
}
# An open event stream never ends by itself: a stop waits this long for the streams, then closes them.
GRACEFUL_SHUTDOWN_SECONDS = 1


class Command(RunserverCommand):
    help = "Starts the project's ASGI application (ASGI_APPLICATION) under uvicorn, for development."

    # testserver passes use_threading; uvicorn serves from one event loop, and the application brings its own threads.
    stealth_options = (*RunserverCommand.stealth_options, "use_threading")

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("addrport", nargs="?", help="Optional port number, or ipaddr:port")
        parser.add_argument(
            "--ipv6", "-6", action="store_true", dest="use_ipv6", help="Tells Django to use an IPv6 address."
        )
        parser.add_argument(
            "--noreload", action="store_false", dest="use_reloader", help="Tells Django to NOT use the auto-reloader."
        )

    def inner_run(self, *args: object, **options: object) -> None:
        # As Django's inner_run: an error held back by the reloader's parent is raised here, then the checks.
        autoreload.raise_last_exception()
        if not options["skip_checks"]:
            self.stdout.write("Performing system checks...\n\n")
            self.check(**{**super().get_check_kwargs(options), "display_num_errors": True})
        self.check_migrations()
        for conn in connections.all(initialized_only=True):
            conn.close()

        try:
            sock = self.bind()
        except OSError as exc:
            self.stderr.write(f"Error: {BIND_ERRORS.get(exc.errno, exc)}")
            os._exit(1)  # sys.exit would end only the reloader's server thread
        config = uvicorn.Config(
            import_string(settings.ASGI_APPLICATION),
            timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_SECONDS,
        )
        self.on_bind(sock.getsockname()[1])
        try:
            # Under the reloader this runs on a thread, where uvicorn leaves signals alone: the reloader's main
            # thread ends the process. With --noreload uvicorn takes SIGINT and SIGTERM, stops, and raises them again.
            uvicorn.Server(config).run(sockets=[sock])
        except KeyboardInterrupt:
            if shutdown_message := options.get("shutdown_message", ""):
                self.stdout.write(shutdown_message)
            sys.exit(0)

    def bind(self) -> socket.socket:
        sock = socket.socket(socket.AF_INET6 if self.use_ipv6 else socket.AF_INET)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # a reload binds the port its predecessor had
        try:
            sock.bind((self.addr, int(self.port)))
        except OSError:
            sock.close()
            raise
        return sock
