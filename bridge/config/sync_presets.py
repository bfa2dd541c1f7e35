"""The presets of providers whose incremental sync is an opaque delta or sync token
(`mode: delta`): Microsoft Graph, Google Calendar, Google Drive and Dropbox.

Each builds plain poll keys, as the presets of presets.py do, and an `auth:` from what the
user gives: a static `token` (a bearer token, for tests and short scripts), or the
provider's OAuth2 client (Graph: client credentials against the tenant; Google: a service
account's `key_file`, `subject` for domain-wide delegation, or a refresh token; Dropbox: a
refresh token with the app key and secret).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any
from urllib.parse import quote

if TYPE_CHECKING:  # presets.py imports this module
    from bridge.config.presets import Inputs

GRAPH_API = "https://graph.microsoft.com/v1.0"
GRAPH_LOGIN = "https://login.microsoftonline.com"
GOOGLE_API = "https://www.googleapis.com"
GOOGLE_OAUTH_URL = "https://oauth2.googleapis.com/token"
DROPBOX_API = "https://api.dropboxapi.com"
DROPBOX_OAUTH_URL = "https://api.dropbox.com/oauth2/token"

# Inputs these presets read (besides presets.py's `token` and `api_url`).
SYNC_INPUT_KEYS = frozenset(
    {
        "tenant", "client_id", "client_secret", "refresh_token", "key_file", "subject",
        "user", "folder", "drive", "calendar", "start", "end", "path", "app_key",
        "app_secret",
    }
)  # fmt: skip


class MissingInput(ValueError):
    """A key a preset needs for the way of signing in the user chose; `key` to blame."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(message)
        self.key = key


def _base(inputs: Inputs, default: str) -> str:
    return (inputs.get("api_url") or default).rstrip("/")


def _need(inputs: Inputs, key: str, why: str) -> str:
    value = inputs.get(key)
    if value is None:
        raise MissingInput(key, f"is required by {why}")
    return value


def _auth(inputs: Inputs, oauth2: dict[str, Any] | None) -> dict[str, Any]:
    """The keys that sign the source in: a static token as `auth: {bearer}`, else
    `auth: {oauth2}`, the provider's OAuth2 client."""
    token = inputs.get("token")
    if token is not None:
        return {"auth": {"bearer": token}}
    if oauth2 is None:
        raise MissingInput("token", "is required (or the preset's OAuth2 keys)")
    return {"auth": {"oauth2": oauth2}}


def _path(segment: str) -> str:
    return quote(segment, safe="@")


# -- Microsoft Graph -------------------------------------------------------------------------


def _graph_oauth2(inputs: Inputs) -> dict[str, Any] | None:
    if inputs.get("client_id") is None and inputs.get("tenant") is None:
        return None
    why = "microsoft-graph's client credentials"
    tenant = _path(_need(inputs, "tenant", why))
    return {
        "grant": "client_credentials",
        "token_url": f"{GRAPH_LOGIN}/{tenant}/oauth2/v2.0/token",
        "client_id": _need(inputs, "client_id", why),
        "client_secret": _need(inputs, "client_secret", why),
        "client_auth": "client_secret_post",
        "scope": ["https://graph.microsoft.com/.default"],
    }


def graph(inputs: Inputs) -> dict[str, Any]:
    """Microsoft Graph delta query: `@odata.nextLink` pages, then `@odata.deltaLink`."""
    base = _base(inputs, GRAPH_API)
    resource = inputs.resource
    params: dict[str, Any] = {}
    if resource in ("users", "groups"):
        url = f"{base}/{resource}/delta"
    elif resource == "drive-items" and inputs.get("drive") is not None:
        url = f"{base}/drives/{_path(inputs.need('drive'))}/root/delta"
    else:
        user = _path(_need(inputs, "user", f"resource {resource}"))
        if resource == "messages":
            folder = _path(inputs.get("folder") or "inbox")
            url = f"{base}/users/{user}/mailFolders/{folder}/messages/delta"
        elif resource == "events":
            # v1.0 tracks a calendar view: a window fixed by the first request and carried
            # by every link after it.
            url = f"{base}/users/{user}/calendarView/delta"
            why = "resource events (the calendar view's window)"
            params = {
                "startDateTime": _need(inputs, "start", why),
                "endDateTime": _need(inputs, "end", why),
            }
        else:  # drive-items of the user's OneDrive
            url = f"{base}/users/{user}/drive/root/delta"
    return {
        "url": url,
        "params": params,
        **_auth(inputs, _graph_oauth2(inputs)),
        "mode": "delta",
        "delta": {
            "token": {"url": True},
            "next": '"@odata.nextLink"',
            "final": '"@odata.deltaLink"',
            "deleted": '"@removed"',
            "resync_on": [410, "syncStateNotFound", "syncStateInvalid", "resyncRequired"],
            # An updated user or group comes with only the properties that changed.
            "merge": resource in ("users", "groups"),
        },
        "items": "value",
        "id": "id",
        "every": "60s",
        "max_pages": 1000,
    }


# -- Google ----------------------------------------------------------------------------------


def _google_oauth2(inputs: Inputs, scope: str) -> dict[str, Any] | None:
    if inputs.get("key_file") is not None:
        out = {"grant": "jwt_bearer", "token_url": GOOGLE_OAUTH_URL, "scope": [scope]}
        out["key_file"] = inputs.need("key_file")
        if inputs.get("subject") is not None:
            out["subject"] = inputs.need("subject")
        return out
    if inputs.get("refresh_token") is None:
        return None
    why = "a Google refresh token"
    return {
        "grant": "refresh_token",
        "token_url": GOOGLE_OAUTH_URL,
        "client_id": _need(inputs, "client_id", why),
        "client_secret": _need(inputs, "client_secret", why),
        "client_auth": "client_secret_post",
        "refresh_token": inputs.need("refresh_token"),
        "scope": [scope],
    }


def google_calendar(inputs: Inputs) -> dict[str, Any]:
    """Calendar `events.list`: pages by `pageToken`, then `nextSyncToken`; a 410 resyncs."""
    calendar = _path(inputs.get("calendar") or "primary")
    scope = "https://www.googleapis.com/auth/calendar.readonly"
    return {
        "url": f"{_base(inputs, GOOGLE_API)}/calendar/v3/calendars/{calendar}/events",
        "params": {"maxResults": 250},
        **_auth(inputs, _google_oauth2(inputs, scope)),
        "mode": "delta",
        "delta": {
            "token": {"param": "syncToken"},
            "page": {"param": "pageToken"},
            "next": "nextPageToken",
            "final": "nextSyncToken",
            "deleted": {"field": "status", "value": "cancelled"},
            "resync_on": [410, "fullSyncRequired"],
        },
        "items": "items",
        "id": "id",
        "version": "etag",
        "time": "updated",
        "every": "60s",
    }


def google_drive(inputs: Inputs) -> dict[str, Any]:
    """Drive `changes.list` from `getStartPageToken`, then `newStartPageToken`."""
    base = _base(inputs, GOOGLE_API)
    scope = "https://www.googleapis.com/auth/drive.metadata.readonly"
    return {
        "url": f"{base}/drive/v3/changes",
        "params": {"pageSize": 1000, "includeRemoved": True},
        **_auth(inputs, _google_oauth2(inputs, scope)),
        "mode": "delta",
        "delta": {
            "token": {"param": "pageToken"},
            "next": "nextPageToken",
            "final": "newStartPageToken",
            "start": {"url": f"{base}/drive/v3/changes/startPageToken", "token": "startPageToken"},
            "deleted": "removed",
            "resync_on": [410],
        },
        "items": "changes",
        "id": "fileId",
        "time": "time",
        "every": "60s",
    }


# -- Dropbox ---------------------------------------------------------------------------------


def _dropbox_oauth2(inputs: Inputs) -> dict[str, Any] | None:
    if inputs.get("refresh_token") is None:
        return None
    why = "a Dropbox refresh token"
    return {
        "grant": "refresh_token",
        "token_url": DROPBOX_OAUTH_URL,
        "client_id": _need(inputs, "app_key", why),
        "client_secret": _need(inputs, "app_secret", why),
        "refresh_token": inputs.need("refresh_token"),
    }


def dropbox(inputs: Inputs) -> dict[str, Any]:
    """`files/list_folder`, then `files/list_folder/continue` with `cursor` while `has_more`."""
    base = _base(inputs, DROPBOX_API)
    path = inputs.get("path") or ""
    return {
        "url": f"{base}/2/files/list_folder/continue",
        "method": "POST",
        **_auth(inputs, _dropbox_oauth2(inputs)),
        "mode": "delta",
        "delta": {
            "token": {"body": "cursor"},
            "next": "has_more && cursor",
            "final": "cursor",
            "start": {
                "url": f"{base}/2/files/list_folder",
                "body": {"path": "" if path == "/" else path, "recursive": True},
            },
            "deleted": {"field": '".tag"', "value": "deleted"},
            "resync_on": ["reset"],
        },
        "items": "entries",
        "id": "path_lower",
        "every": "60s",
    }


# The ways to sign in to each provider, as `bridge presets` lists them: each the keys it takes.
GRAPH_SIGN_IN = {
    "OAuth2 client credentials against login.microsoftonline.com/{tenant}": (
        "tenant",
        "client_id",
        "client_secret",
    ),
    "a bearer token": ("token",),
}
GOOGLE_SIGN_IN = {
    "a service account (OAuth2 JWT bearer), subject to act as a user": ("key_file", "subject"),
    "OAuth2 refresh token": ("client_id", "client_secret", "refresh_token"),
    "a bearer token": ("token",),
}
DROPBOX_SIGN_IN = {
    "OAuth2 refresh token with the app's key and secret": (
        "app_key",
        "app_secret",
        "refresh_token",
    ),
    "a bearer token": ("token",),
}
