"""The DRF API (``/api/v1/``): thin adapters over the services and selectors."""
