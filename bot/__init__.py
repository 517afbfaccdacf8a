"""Telegram bot that brings Bitrix24 task counters to each employee."""
