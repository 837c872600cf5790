"""Django's compilemessages, also for releases the app user cannot write to.

Without LOCALE_DIR it is Django's command unchanged (.mo files next to the .po sources). With LOCALE_DIR set (as in
the example inventory, a directory under the app's shared/), the project's locale/ sources are copied there first
and compiled in place: settings.LOCALE_PATHS points at LOCALE_DIR, so the running app reads those .mo files while
the release itself stays read-only for the app user.
"""

import os
import shutil
from pathlib import Path

from django.conf import settings
from django.core.management.commands import compilemessages


class Command(compilemessages.Command):
    def handle(self, **options):
        target = os.environ.get("LOCALE_DIR")
        if target:
            target_dir = Path(target)
            source_dir = settings.BASE_DIR / "locale"
            if target_dir.resolve() != source_dir.resolve():
                staging = target_dir.with_name(target_dir.name + ".new")
                shutil.rmtree(staging, ignore_errors=True)
                shutil.copytree(source_dir, staging)
                # Compile the copy, then put it in place; Django walks the working directory for locale/ dirs.
                os.chdir(staging)
                settings.LOCALE_PATHS = [staging]
                super().handle(**options)
                shutil.rmtree(target_dir, ignore_errors=True)
                staging.rename(target_dir)
                return
        super().handle(**options)
