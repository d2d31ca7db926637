"""Settings, read from the environment; with nothing set, Firefly runs on SQLite and files.

`base` holds Django's settings and the services Firefly talks to; `firefly` the engine's
own, which read some of the base ones (the database, the data folder).
"""

from firefly_site.settings.base import *  # noqa: F403
from firefly_site.settings.firefly import *  # noqa: F403
