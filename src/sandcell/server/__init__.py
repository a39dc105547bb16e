"""``sandcell serve``: sandboxes as a service, with a native REST API and E2B wire compatibility (``sandcell.server.app.create_app``)."""
