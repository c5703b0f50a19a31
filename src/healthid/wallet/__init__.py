"""Reference phone client: SDK and the healthid wallet CLI (enrolment issue)."""
