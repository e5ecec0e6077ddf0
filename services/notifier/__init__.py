"""Notifier: Telegram notifications and commands over the bus."""
