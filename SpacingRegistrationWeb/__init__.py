"""SpacingRegistration web front end (trame-slicer): ``python -m SpacingRegistrationWeb --port 8080 --host 127.0.0.1``."""
