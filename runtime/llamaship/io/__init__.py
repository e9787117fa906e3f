"""Generic I/O that overlays and models share: durable files, bounded fetches, trusted keys."""
