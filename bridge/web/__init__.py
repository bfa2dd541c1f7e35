"""The daemon's web pages: the status page and the guard of the admin routes."""
