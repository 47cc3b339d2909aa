"""Code that only tests install into the service's processes; nothing in the product imports it
(checked by lint-imports)."""
