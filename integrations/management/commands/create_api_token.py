"""Create (or replace) a user's API token and print it once."""

from __future__ import annotations

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from integrations.services import api_token_create


class Command(BaseCommand):
    help = (
        "Create a new API token for a user, replacing any they had, and print it. It is stored hashed: "
        "this is the only time it can be read."
    )

    def add_arguments(self, parser):
        parser.add_argument("username")

    def handle(self, *args, username: str, **options):
        user = get_user_model().objects.filter(username=username).first()
        if user is None:
            raise CommandError(f"No user named {username!r}.")
        self.stderr.write(f"New API token for {username} (the previous one, if any, no longer works):")
        self.stdout.write(api_token_create(user=user, actor=None))
