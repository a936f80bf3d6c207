"""The exit statuses of the commands: ``zeoserver``, ``zeopack``, ``bin/<instance>``.

LSB-like, so that init scripts and service managers read them as usual:

    0   success (``status``: running)
    1   failure: already running, not running, failed to start or to stop,
        a pack that failed; ``fg`` after SIGHUP ("restart me", as in ZEO);
        ``status``: not running, but a stale pid file remains
    2   a wrong command line or configuration file
    3   ``status``: not running
    75  an instance's ``fg`` whose start-up raced another instance's first
        commits to a new database (EX_TEMPFAIL): running it again will work
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
#: ``fg`` after SIGHUP: its service manager (or the daemon itself) restarts it.
EXIT_RESTART = 1
STATUS_STALE = 1
STATUS_NOT_RUNNING = 3
EXIT_TRY_AGAIN = 75
