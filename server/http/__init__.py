"""Every HTTP route: REST, legacy polling, demo/admin, OpenAPI, the debug page, problems."""
