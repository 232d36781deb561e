import secrets

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand
from django.db import transaction

from integrations import services
from integrations.models import Namespace, Role, Tenant


class Command(BaseCommand):
    help = (
        "First-run setup, safe to repeat: create an admin user (its generated password is printed "
        "once, only when it is created) and a demo organisation with a top-level namespace."
    )

    def add_arguments(self, parser):
        parser.add_argument("--username", default="admin")
        parser.add_argument("--email", default="admin@example.com")
        parser.add_argument("--tenant", default="Demo", help="Name of the demo organisation.")

    @transaction.atomic
    def handle(self, *args, username: str, email: str, tenant: str, **options):
        User = get_user_model()
        admin = User.objects.filter(username=username).first()
        if admin is None:
            password = secrets.token_urlsafe(12)
            admin = User.objects.create_superuser(username=username, email=email, password=password)
            self.stdout.write(
                self.style.SUCCESS(
                    f"Created admin user '{username}' with password: {password}\n"
                    "  (shown this once; change it with: python manage.py changepassword "
                    f"{username})"
                )
            )
        else:
            self.stdout.write(f"Admin user '{username}' exists; its password is unchanged.")

        organisation = Tenant.objects.filter(name=tenant).first()
        if organisation is None:
            organisation = services.tenant_create(name=tenant, actor=admin)
            services.membership_set(tenant=organisation, user=admin, role=Role.OWNER, actor=admin)
            self.stdout.write(f"Created organisation '{tenant}'.")
        if not Namespace.objects.filter(tenant=organisation, parent=None, managed=False).exists():
            services.namespace_create(tenant=organisation, name="Engineering", actor=admin)
            self.stdout.write("Created namespace 'Engineering'.")
