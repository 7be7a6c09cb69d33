from bot.standins.slack import *  # noqa: F403  (moved to bot/standins/slack.py)
