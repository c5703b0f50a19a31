"""BSI TR-03130 eID-Server client and local stand-in (enrolment issue)."""
