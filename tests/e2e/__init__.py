"""End-to-end tests: a real Airflow api-server, its React UI in Debian's Chromium, and the cloud sandboxes."""
