"""The local SMTP server against Django's own SMTP backend; no Temporal server."""

import smtplib
import threading
from collections.abc import Iterator

import environ
import pytest
from django.core.mail import EmailMessage, get_connection

from devtools.mail_server import MailServer, describe


@pytest.fixture
def mail_server() -> Iterator[MailServer]:
    with MailServer() as server:
        yield server


def send(server: MailServer, subject: str = "Your chats", body: str = "Three chats mention pizza.") -> int:
    """One message through Django's SMTP backend, as the app sends it."""
    connection = get_connection("django.core.mail.backends.smtp.EmailBackend", host="127.0.0.1", port=server.port)
    message = EmailMessage(subject, body, "assistant@example.com", ["ada@example.com"], connection=connection)
    return message.send()


class Sender(threading.Thread):
    """`send` on a thread of its own, keeping what it returned or raised."""

    def __init__(self, server: MailServer) -> None:
        super().__init__(daemon=True)
        self.server = server
        self.sent: int | None = None
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self.sent = send(self.server)
        except BaseException as exc:
            self.error = exc


def test_a_message_sent_through_django_is_recorded_as_an_email_message(mail_server):
    assert send(mail_server, subject="Résumé of your chats", body="Three chats mention pizza.\n") == 1

    (message,) = mail_server.wait_for_messages(1)
    assert (message["From"], message["To"], message["Subject"]) == (
        "assistant@example.com",
        "ada@example.com",
        "Résumé of your chats",
    )
    assert message.get_body(preferencelist=("plain",)).get_content() == "Three chats mention pizza.\n"


def test_messages_are_recorded_in_the_order_received(mail_server):
    for subject in ("one", "two", "three"):
        send(mail_server, subject=subject)

    assert [message["Subject"] for message in mail_server.wait_for_messages(3)] == ["one", "two", "three"]


def test_wait_for_messages_gives_up_at_its_deadline_naming_what_it_waited_for(mail_server):
    send(mail_server)

    with pytest.raises(TimeoutError, match=r"2 message\(s\); 1 message\(s\) received"):
        mail_server.wait_for_messages(2, timeout=0.05)


def test_the_url_is_the_email_url_django_environ_reads(mail_server):
    config = environ.Env.email_url_config(mail_server.url)

    assert (config["EMAIL_BACKEND"], config["EMAIL_HOST"], config["EMAIL_PORT"]) == (
        "django.core.mail.backends.smtp.EmailBackend",
        "127.0.0.1",
        mail_server.port,
    )


def test_a_held_message_is_recorded_but_unacknowledged_until_released(mail_server):
    mail_server.hold()
    sender = Sender(mail_server)
    sender.start()

    mail_server.wait_until(lambda server: server.held, what="a held message")
    assert [message["Subject"] for message in mail_server.messages] == ["Your chats"]
    assert sender.is_alive()  # still waiting for the 250
    mail_server.release()
    sender.join(timeout=5)

    assert (sender.is_alive(), sender.sent, sender.error) == (False, 1, None)
    assert not mail_server.held


def test_hold_applies_to_the_next_message_only(mail_server):
    mail_server.hold()
    sender = Sender(mail_server)
    sender.start()
    mail_server.wait_until(lambda server: server.held, what="a held message")
    mail_server.release()
    sender.join(timeout=5)

    assert send(mail_server, subject="after") == 1
    assert len(mail_server.wait_for_messages(2)) == 2


def test_release_before_any_message_withdraws_the_hold(mail_server):
    mail_server.hold()
    mail_server.release()

    assert send(mail_server) == 1
    assert not mail_server.held


def test_a_server_stopped_while_holding_leaves_the_sender_unacknowledged(mail_server):
    mail_server.hold()
    sender = Sender(mail_server)
    sender.start()
    mail_server.wait_until(lambda server: server.held, what="a held message")

    mail_server.stop()
    sender.join(timeout=5)

    assert isinstance(sender.error, smtplib.SMTPServerDisconnected)
    assert len(mail_server.messages) == 1  # the effect happened all the same


def test_a_sender_gone_while_held_leaves_the_message_recorded_and_the_server_ready(mail_server):
    mail_server.hold()
    sender = smtplib.SMTP("127.0.0.1", mail_server.port, timeout=5)
    sender.ehlo()
    sender.mail("assistant@example.com")
    sender.rcpt("ada@example.com")
    assert sender.docmd("DATA")[0] == 354
    sender.send(b"Subject: cut off\r\n\r\nSent, never acknowledged.\r\n.\r\n")
    mail_server.wait_until(lambda server: server.held, what="a held message")

    sender.close()  # its socket closes, as a killed process's does
    mail_server.wait_until(lambda server: not server.held, what="the held message to be let go")

    assert [message["Subject"] for message in mail_server.messages] == ["cut off"]
    assert send(mail_server) == 1


def test_describe_shows_recipient_subject_and_text(mail_server):
    send(mail_server, subject="Your chats", body="Three chats mention pizza.")

    assert describe(mail_server.wait_for_messages(1)[0]) == (
        "To: ada@example.com\nSubject: Your chats\n\nThree chats mention pizza.\n" + "-" * 72
    )
