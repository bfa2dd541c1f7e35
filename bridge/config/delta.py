"""The models of `mode: delta` (`sources.NAME.poll.delta`): how the opaque delta or sync
token an upstream hands out is sent back (a parameter, a URL, a JSON body), where the next
page and the token to keep are in an answer, which items are deletions, and which answers
reject the token and start a full resync (bridge/poll/delta.py walks by them)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, Discriminator, Field, Tag

from bridge.config.values import HttpURL, JMESPath, _Model, _one_or_many


class TokenParam(_Model):
    """A token sent as a query parameter: `{param: syncToken}`."""

    # The query parameter the token is sent in.
    param: str


class TokenUrl(_Model):
    """A token that is itself the URL to ask (Microsoft Graph's `@odata.deltaLink`)."""

    # `true`: the token is the URL to ask, on the source's origin.
    url: Literal[True]


class TokenBody(_Model):
    """A token sent in a JSON body `{NAME: token}` (Dropbox's `list_folder/continue`)."""

    # The key of the JSON body the token is sent in, with the source's `method` (POST).
    body: str


def _token_kind(value: Any) -> str:
    if isinstance(value, dict):
        return next((k for k in ("param", "url", "body") if k in value), "param")
    if isinstance(value, TokenUrl):
        return "url"
    return "body" if isinstance(value, TokenBody) else "param"


TokenSend = Annotated[
    Annotated[TokenParam, Tag("param")]
    | Annotated[TokenUrl, Tag("url")]
    | Annotated[TokenBody, Tag("body")],
    Discriminator(_token_kind),
]


class DeletedField(_Model):
    """An item is a deletion when `field` has `value`: `{field: status, value: cancelled}`."""

    # JMESPath to the item field that marks a deletion.
    field: JMESPath
    # The value of that field on a deleted item.
    value: str | int | bool


class DeltaStart(_Model):
    """The first walk of a delta source, when it is not the source's `url` without a token.

    With `token`, the answer only hands out the first token (Drive's `startPageToken`): the
    baseline holds no items. Without it, the answer is the first page of the full walk
    (Dropbox's `list_folder`, its `body` the listing's arguments).
    """

    # The first walk's URL (default: the source's `url`).
    url: HttpURL | None = None
    # The first walk's method (default: the source's `method`).
    method: str | None = None
    # The first walk's query parameters; a `url` of its own is sent only these.
    params: dict[str, str | int | float | bool] = Field({}, repr=False)
    # A JSON body sent with the first walk's request (Dropbox's `{path, recursive}`).
    body: dict[str, Any] | None = None
    # JMESPath to the first token in the start's answer, which then lists no items.
    token: JMESPath | None = None


class DeltaConfig(_Model):
    """An opaque delta or sync token: walk pages until the answer gives the next token."""

    # How the kept token is sent on the next poll's first request.
    token: TokenSend
    # The next page's link or token in a page (nothing, empty or false: the last page).
    next: JMESPath
    # How a next page's token is sent, when not as the kept token is (Google Calendar: the
    # sync token as syncToken, the pages as pageToken).
    page: TokenSend | None = None
    # The token to keep, in the last page.
    final: JMESPath
    # The first walk, when it is not `url` without a token.
    start: DeltaStart | None = None
    # Which items are deletions: `{field, value}` or a JMESPath predicate (true: deleted).
    deleted: DeletedField | JMESPath | None = None
    # Statuses (410) or error codes in the error answer (`fullSyncRequired`, `resyncRequired`,
    # Dropbox's `reset`) that mean the token is no longer good: a full resync.
    resync_on: Annotated[list[int | str], BeforeValidator(_one_or_many)] = [410]
    # An upsert carries only the fields that changed (Graph's users and groups): it is merged
    # over the stored item, so the snapshot and the events hold the whole item.
    merge: bool = False

    @property
    def page_send(self) -> TokenParam | TokenUrl | TokenBody:
        """How a next page's token is sent."""
        return self.page or self.token
